//! Class breaks for choropleths (quantiles, equal intervals, Jenks natural breaks)
//! and the legend a map draws from them.

use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Quantile,
    Equal,
    Jenks,
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, String> {
        match s {
            "quantile" | "quantiles" => Ok(Method::Quantile),
            "equal" | "equal_interval" => Ok(Method::Equal),
            "jenks" | "natural" => Ok(Method::Jenks),
            _ => Err(format!(
                "unknown classification '{s}'; use quantile, equal or jenks"
            )),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Quantile => "quantile",
            Method::Equal => "equal",
            Method::Jenks => "jenks",
        }
    }
}

pub const MIN_CLASSES: usize = 2;
pub const MAX_CLASSES: usize = 9;

/// Sequential yellow→red palettes (ColorBrewer YlOrRd), by number of classes.
fn palette(n: usize) -> Vec<&'static str> {
    const YLORRD9: [&str; 9] = [
        "#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026",
        "#800026",
    ];
    // Spread n colours over the nine, keeping both ends.
    (0..n)
        .map(|i| {
            let k = if n == 1 {
                8
            } else {
                (i * 8 + (n - 1) / 2) / (n - 1)
            };
            YLORRD9[k.min(8)]
        })
        .collect()
}

/// Upper bounds of each class (the last is the maximum); fewer classes than asked
/// when there are fewer distinct values.
pub fn breaks(values: &[f64], n: usize, method: Method) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Vec::new();
    }
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v[0], v[v.len() - 1]);
    let mut b: Vec<f64> = match method {
        Method::Equal => (1..=n)
            .map(|i| {
                if i == n {
                    hi
                } else {
                    lo + (hi - lo) * i as f64 / n as f64
                }
            })
            .collect(),
        Method::Quantile => (1..=n)
            .map(|i| {
                let idx = ((i * v.len()).div_ceil(n)).clamp(1, v.len()) - 1;
                v[idx]
            })
            .collect(),
        Method::Jenks => jenks(&v, n),
    };
    b.dedup();
    b
}

/// Fisher–Jenks optimal breaks (minimum within-class squared deviation), on sorted
/// values. O(k·n²): zone layers have thousands of zones, not millions.
fn jenks(v: &[f64], k: usize) -> Vec<f64> {
    let n = v.len();
    let k = k.min(n).max(1);
    // Prefix sums for O(1) class variance.
    let mut s1 = vec![0.0; n + 1];
    let mut s2 = vec![0.0; n + 1];
    for i in 0..n {
        s1[i + 1] = s1[i] + v[i];
        s2[i + 1] = s2[i] + v[i] * v[i];
    }
    let ssd = |a: usize, b: usize| {
        // values a..b (exclusive)
        let m = (b - a) as f64;
        let s = s1[b] - s1[a];
        (s2[b] - s2[a]) - s * s / m
    };
    // cost[c][j]: best cost of the first j values in c+1 classes.
    let mut cost = vec![vec![f64::INFINITY; n + 1]; k];
    let mut cut = vec![vec![0usize; n + 1]; k];
    for (j, c) in cost[0].iter_mut().enumerate().skip(1) {
        *c = ssd(0, j);
    }
    for c in 1..k {
        for j in (c + 1)..=n {
            for i in c..j {
                let x = cost[c - 1][i] + ssd(i, j);
                if x < cost[c][j] {
                    cost[c][j] = x;
                    cut[c][j] = i;
                }
            }
        }
    }
    let mut ends = vec![n];
    let mut j = n;
    for c in (1..k).rev() {
        j = cut[c][j];
        ends.push(j);
    }
    ends.reverse();
    ends.into_iter()
        .filter(|&e| e > 0)
        .map(|e| v[e - 1])
        .collect()
}

/// The class (0-based) of a value given the upper bounds.
pub fn class_of(x: f64, breaks: &[f64]) -> Option<usize> {
    if !x.is_finite() || breaks.is_empty() {
        return None;
    }
    Some(
        breaks
            .iter()
            .position(|&b| x <= b)
            .unwrap_or(breaks.len() - 1),
    )
}

/// Legend JSON for `values` classed by `b` (from [`breaks`]): classes with their
/// ranges, counts and colours.
pub fn legend(values: &[Option<f64>], b: &[f64], method: Method) -> Value {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let colors = palette(b.len());
    let mut counts = vec![0u64; b.len()];
    for &x in &present {
        if let Some(c) = class_of(x, b) {
            counts[c] += 1;
        }
    }
    let lo = present.iter().copied().fold(f64::INFINITY, f64::min);
    let classes: Vec<Value> = b
        .iter()
        .enumerate()
        .map(|(i, &hi)| {
            json!({
                "class": i,
                "min": if i == 0 { lo } else { b[i - 1] },
                "max": hi,
                "count": counts[i],
                "color": colors[i],
            })
        })
        .collect();
    let nulls = values.len() - present.len();
    json!({"method": method.name(), "breaks": b, "classes": classes, "no_data": nulls, "no_data_color": "#cccccc"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaks_by_method() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(breaks(&v, 5, Method::Equal), vec![2.8, 4.6, 6.4, 8.2, 10.0]);
        assert_eq!(
            breaks(&v, 5, Method::Quantile),
            vec![2.0, 4.0, 6.0, 8.0, 10.0]
        );
        // Three obvious clusters.
        let c = [1.0, 1.1, 1.2, 5.0, 5.1, 5.2, 9.0, 9.1, 9.3];
        assert_eq!(breaks(&c, 3, Method::Jenks), vec![1.2, 5.2, 9.3]);
        assert_eq!(class_of(5.1, &[1.2, 5.2, 9.3]), Some(1));
        assert_eq!(class_of(0.0, &[1.2, 5.2, 9.3]), Some(0));
        // Fewer distinct values than classes.
        assert_eq!(breaks(&[3.0, 3.0, 3.0], 5, Method::Quantile), vec![3.0]);
        assert!(breaks(&[], 5, Method::Jenks).is_empty());
        assert_eq!(palette(2), vec!["#ffffcc", "#800026"]);
        assert_eq!(palette(9).len(), 9);
    }
}
