//! OGC API – Features semantics over a loaded layer: query parameters, paging and the
//! GeoJSON documents. Pure functions of (layer, query): no axum here, so they are unit
//! tested without a server.

use layers::index::LoadedLayer;
use serde_json::json;

/// Default and maximum page sizes (OGC API – Features, /req/core/fc-limit-*).
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

/// A 400 with a message that names the parameter and what is wrong with it.
#[derive(Debug, PartialEq)]
pub struct BadParam(pub String);

#[derive(Debug, Clone, PartialEq)]
pub struct ItemsQuery {
    /// [minx, miny, maxx, maxy], lon/lat.
    pub bbox: Option<[f64; 4]>,
    pub limit: usize,
    pub offset: usize,
}

const ITEMS_PARAMS: &[&str] = &["bbox", "limit", "offset", "f"];

/// Parses the query string of `/collections/{id}/items`. Unknown parameters are an
/// error (a misspelt `bbox` must not silently return the whole layer).
pub fn parse_items_query(raw: Option<&str>) -> Result<ItemsQuery, BadParam> {
    let mut q = ItemsQuery {
        bbox: None,
        limit: DEFAULT_LIMIT,
        offset: 0,
    };
    let mut seen = std::collections::HashSet::new();
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        if !ITEMS_PARAMS.contains(&k.as_ref()) {
            return Err(BadParam(format!(
                "unknown query parameter '{k}'; this endpoint accepts: {}",
                ITEMS_PARAMS.join(", ")
            )));
        }
        if !seen.insert(k.to_string()) {
            return Err(BadParam(format!(
                "query parameter '{k}' is given more than once"
            )));
        }
        match k.as_ref() {
            "bbox" => q.bbox = Some(parse_bbox(&v)?),
            "limit" => {
                q.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        BadParam(format!(
                            "limit must be a whole number from 1 to {MAX_LIMIT}, got '{v}'"
                        ))
                    })?
            }
            "offset" => {
                q.offset = v.parse::<usize>().map_err(|_| {
                    BadParam(format!("offset must be a whole number >= 0, got '{v}'"))
                })?
            }
            "f" if v != "json" && v != "geojson" => {
                return Err(BadParam(format!("f must be 'json' (GeoJSON), got '{v}'")));
            }
            _ => {}
        }
    }
    Ok(q)
}

/// `bbox=minx,miny,maxx,maxy` (or the 6-number 3D form) in lon/lat degrees.
pub fn parse_bbox(v: &str) -> Result<[f64; 4], BadParam> {
    let nums: Vec<f64> = v
        .split(',')
        .map(|s| s.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            BadParam(format!(
                "bbox must be 4 comma-separated numbers (minLon,minLat,maxLon,maxLat), got '{v}'"
            ))
        })?;
    let b = match nums.len() {
        4 => [nums[0], nums[1], nums[2], nums[3]],
        6 => [nums[0], nums[1], nums[3], nums[4]],
        n => {
            return Err(BadParam(format!(
                "bbox must have 4 numbers (minLon,minLat,maxLon,maxLat) or 6 for a 3D box, got {n}"
            )))
        }
    };
    if b.iter().any(|x| !x.is_finite()) {
        return Err(BadParam(format!("bbox has a non-finite number: '{v}'")));
    }
    if !(-180.0..=180.0).contains(&b[0]) || !(-180.0..=180.0).contains(&b[2]) {
        return Err(BadParam(format!(
            "bbox longitudes must be within -180..180, got '{v}'"
        )));
    }
    if !(-90.0..=90.0).contains(&b[1]) || !(-90.0..=90.0).contains(&b[3]) {
        return Err(BadParam(format!(
            "bbox latitudes must be within -90..90, got '{v}'"
        )));
    }
    if b[1] > b[3] {
        return Err(BadParam(format!(
            "bbox minimum latitude {} is greater than the maximum {}",
            b[1], b[3]
        )));
    }
    if b[0] > b[2] {
        return Err(BadParam(format!(
            "bbox minimum longitude {} is greater than the maximum {}: boxes crossing the \
             antimeridian are not supported, split it into two requests",
            b[0], b[2]
        )));
    }
    Ok(b)
}

fn items_url(collection_url: &str, q: &ItemsQuery, offset: usize) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    if let Some(b) = q.bbox {
        s.append_pair("bbox", &format!("{},{},{},{}", b[0], b[1], b[2], b[3]));
    }
    s.append_pair("limit", &q.limit.to_string());
    s.append_pair("offset", &offset.to_string());
    format!("{collection_url}/items?{}", s.finish())
}

/// One page of `/items` as a GeoJSON FeatureCollection with OGC paging members.
pub fn items_page(
    layer: &LoadedLayer,
    q: &ItemsQuery,
    collection_url: &str,
) -> layers::Result<Vec<u8>> {
    let hits: Option<Vec<u32>> = q.bbox.map(|b| layer.query_bbox(b));
    let matched = hits.as_ref().map_or(layer.len(), Vec::len);
    let start = q.offset.min(matched);
    let end = (start + q.limit).min(matched);
    let mut out = Vec::with_capacity(256 + (end - start) * 256);
    out.extend_from_slice(br#"{"type":"FeatureCollection","features":["#);
    for (n, i) in (start..end).enumerate() {
        let pos = hits.as_ref().map_or(i as u32, |h| h[i]);
        let Some((_, offset)) = layer.at(pos) else {
            continue;
        };
        if n > 0 {
            out.push(b',');
        }
        layer.write_geojson(offset, &mut out)?;
    }
    let mut links = vec![
        json!({"href": items_url(collection_url, q, q.offset), "rel": "self", "type": "application/geo+json", "title": "this page"}),
        json!({"href": collection_url, "rel": "collection", "type": "application/json", "title": "the collection"}),
    ];
    if end < matched {
        links.push(json!({"href": items_url(collection_url, q, end), "rel": "next", "type": "application/geo+json", "title": "next page"}));
    }
    if q.offset > 0 {
        let prev = q.offset.saturating_sub(q.limit);
        links.push(json!({"href": items_url(collection_url, q, prev), "rel": "prev", "type": "application/geo+json", "title": "previous page"}));
    }
    let tail = json!({
        "numberMatched": matched,
        "numberReturned": end - start,
        "timeStamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "links": links,
    });
    out.extend_from_slice(b"],");
    let tail = serde_json::to_vec(&tail).map_err(|e| layers::Error::Internal(e.to_string()))?;
    // Splice the members of `tail` into the open object.
    out.extend_from_slice(&tail[1..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bbox_limit_offset() {
        let q = parse_items_query(Some("bbox=-100.4,25.6,-100.2,25.8&limit=10&offset=5")).unwrap();
        assert_eq!(q.bbox, Some([-100.4, 25.6, -100.2, 25.8]));
        assert_eq!((q.limit, q.offset), (10, 5));
        let q = parse_items_query(Some("bbox=-100.4,25.6,0,-100.2,25.8,10")).unwrap();
        assert_eq!(q.bbox, Some([-100.4, 25.6, -100.2, 25.8]));
    }

    #[test]
    fn bad_params_say_what_is_wrong() {
        let cases = [
            ("bbox=1,2,3", "4 numbers"),
            ("bbox=a,b,c,d", "comma-separated numbers"),
            ("bbox=-100,26,-101,27", "antimeridian"),
            ("bbox=-100,27,-99,26", "latitude"),
            ("bbox=-200,20,-99,26", "longitudes"),
            ("bbox=-100,20,-99,96", "latitudes"),
            ("limit=0", "limit"),
            ("limit=10001", "limit"),
            ("limit=x", "limit"),
            ("offset=-1", "offset"),
            ("bbx=1,2,3,4", "unknown query parameter 'bbx'"),
            ("limit=1&limit=2", "more than once"),
        ];
        for (q, needle) in cases {
            let e = parse_items_query(Some(q)).unwrap_err();
            assert!(e.0.contains(needle), "{q}: {}", e.0);
        }
    }
}
