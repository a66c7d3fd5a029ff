//! CQL2 (OGC 21-065) for `filter=` on items: the text and JSON encodings parsed into
//! one expression tree, checked against the layer's queryables, and evaluated per
//! feature with SQL's three-valued logic (a comparison with a null is unknown, and
//! unknown features are not returned).
//!
//! Supported: comparisons (`= <> < <= > >=`), `AND`/`OR`/`NOT`, `LIKE` (`%`, `_`,
//! `\` escape), `IN`, `BETWEEN`, `IS [NOT] NULL`, `CASEI`/`ACCENTI` (case- and
//! accent-insensitive comparison: "ninos" finds "Niños"), `DATE('…')`,
//! `TIMESTAMP('…')`, and `S_INTERSECTS` of the geometry with a WKT or `BBOX(…)`
//! literal (CQL2 JSON: GeoJSON or `{"bbox": […]}`). Errors say what is wrong and at
//! which character of the filter.

use geo::{BoundingRect, Geometry, Intersects};
use layers::fgb::{Field, FieldType, RawValue};
use serde_json::Value;

use crate::features::time_span;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp(CmpOp, Scalar, Scalar),
    Like(Scalar, LikePattern),
    In(Scalar, Vec<Scalar>),
    Between(Scalar, Scalar, Scalar),
    IsNull(Scalar),
    /// The feature's geometry intersects this literal (lon/lat).
    SIntersects(Geometry<f64>),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The same symbols in both encodings.
    fn parse(op: &str) -> Option<CmpOp> {
        Some(match op {
            "=" => CmpOp::Eq,
            "<>" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// Schema index of a property.
    Prop(usize),
    Str(String),
    Num(f64),
    Bool(bool),
    /// Milliseconds since 1970 UTC (start of a date).
    Time(i64),
    /// CASEI(...) / ACCENTI(...) of a scalar.
    Fold(Box<Scalar>, Folding),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folding {
    Case,
    Accent,
}

/// A filter error with its position (0-based character offset; `None` for JSON).
#[derive(Debug, PartialEq)]
pub struct FilterError(pub String);

fn err_at(pos: usize, msg: impl std::fmt::Display) -> FilterError {
    FilterError(format!("filter error at character {}: {msg}", pos + 1))
}

// ---------------------------------------------------------------- CQL2 text

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let start = i;
        if ch.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = match ch {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            '\'' => {
                let (v, next) = quoted(&c, i, '\'', "unterminated 'string'")?;
                i = next;
                Tok::Str(v)
            }
            '"' => {
                let (v, next) = quoted(&c, i, '"', "unterminated \"property name\"")?;
                i = next;
                Tok::Quoted(v)
            }
            '=' => {
                i += 1;
                Tok::Op("=")
            }
            '<' | '>' => {
                let two: String = c[i..(i + 2).min(c.len())].iter().collect();
                let op = match two.as_str() {
                    "<=" => "<=",
                    ">=" => ">=",
                    "<>" => "<>",
                    _ if ch == '<' => "<",
                    _ => ">",
                };
                i += op.len();
                Tok::Op(op)
            }
            d if d.is_ascii_digit()
                || ((d == '-' || d == '+' || d == '.')
                    && c.get(i + 1)
                        .is_some_and(|n| n.is_ascii_digit() || *n == '.')) =>
            {
                let mut j = i + 1;
                while j < c.len()
                    && (c[j].is_ascii_digit()
                        || c[j] == '.'
                        || c[j] == 'e'
                        || c[j] == 'E'
                        || ((c[j] == '-' || c[j] == '+') && matches!(c[j - 1], 'e' | 'E')))
                {
                    j += 1;
                }
                let text: String = c[i..j].iter().collect();
                let n = text
                    .parse::<f64>()
                    .map_err(|_| err_at(start, format!("'{text}' is not a number")))?;
                i = j;
                Tok::Num(n)
            }
            a if a.is_alphabetic() || a == '_' => {
                let mut j = i + 1;
                while j < c.len()
                    && (c[j].is_alphanumeric() || c[j] == '_' || c[j] == ':' || c[j] == '.')
                {
                    j += 1;
                }
                let text: String = c[i..j].iter().collect();
                i = j;
                Tok::Ident(text)
            }
            other => return Err(err_at(start, format!("unexpected character '{other}'"))),
        };
        out.push((start, tok));
    }
    Ok(out)
}

/// The text between quote `q` at `start` and its closing quote (a doubled quote is one
/// literal quote); returns it and the index after the closing quote.
fn quoted(
    c: &[char],
    start: usize,
    q: char,
    unterminated: &str,
) -> Result<(String, usize), FilterError> {
    let mut v = String::new();
    let mut i = start + 1;
    loop {
        match c.get(i) {
            None => return Err(err_at(start, unterminated)),
            Some(x) if *x == q && c.get(i + 1) == Some(&q) => {
                v.push(q);
                i += 2;
            }
            Some(x) if *x == q => return Ok((v, i + 1)),
            Some(x) => {
                v.push(*x);
                i += 1;
            }
        }
    }
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    i: usize,
    end: usize,
    schema: &'a [Field],
    /// The filter's characters (geometry literals are re-read as WKT text).
    chars: Vec<char>,
    /// Nesting of parentheses, NOT and functions: bounded, so a hostile filter cannot
    /// exhaust the stack.
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.end, |t| t.0)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.1)
    }

    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(k))
    }

    fn eat_keyword(&mut self, k: &str) -> bool {
        let yes = self.keyword(k);
        if yes {
            self.i += 1;
        }
        yes
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(&t) {
            self.i += 1;
            Ok(())
        } else {
            Err(err_at(self.pos(), format!("expected {what}")))
        }
    }

    /// `operand (KEYWORD operand)*`, one node for the whole run.
    fn chain(
        &mut self,
        keyword: &str,
        operand: fn(&mut Self) -> Result<Expr, FilterError>,
        node: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, FilterError> {
        let mut v = vec![operand(self)?];
        while self.eat_keyword(keyword) {
            v.push(operand(self)?);
        }
        Ok(if v.len() == 1 { v.remove(0) } else { node(v) })
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        self.chain("OR", Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        self.chain("AND", Self::not, Expr::And)
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(err_at(
                self.pos(),
                format!("the filter nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let e = if self.eat_keyword("NOT") {
            self.not().map(|e| Expr::Not(Box::new(e)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        e
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let e = self.or()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(e);
        }
        if self.keyword("S_INTERSECTS") {
            self.i += 1;
            self.expect(Tok::LParen, "'(' after S_INTERSECTS")?;
            let at = self.pos();
            let g = match (
                self.geometry_operand()?,
                self.eat_comma()?,
                self.geometry_operand()?,
            ) {
                (GeomOperand::Property, _, GeomOperand::Literal(g))
                | (GeomOperand::Literal(g), _, GeomOperand::Property) => g,
                _ => {
                    return Err(err_at(
                        at,
                        "S_INTERSECTS takes the geometry property and a geometry literal",
                    ))
                }
            };
            self.expect(Tok::RParen, "')' closing S_INTERSECTS")?;
            return Ok(Expr::SIntersects(g));
        }
        if matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("TRUE") || s.eq_ignore_ascii_case("FALSE"))
            && !matches!(self.toks.get(self.i + 1).map(|t| &t.1), Some(Tok::Op(_)))
        {
            let t = self.keyword("TRUE");
            self.i += 1;
            return Ok(Expr::Bool(t));
        }
        let left = self.scalar()?;
        let at = self.pos();
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.i += 1;
            let right = self.scalar()?;
            let op = CmpOp::parse(op).ok_or_else(|| err_at(at, "unknown operator"))?;
            return Ok(Expr::Cmp(op, left, right));
        }
        let negated = self.eat_keyword("NOT");
        let e = if self.eat_keyword("LIKE") {
            let pattern = const_string(&self.scalar()?)
                .ok_or_else(|| err_at(at, "LIKE needs a 'pattern' string"))?;
            Expr::Like(left, LikePattern::compile(&pattern))
        } else if self.eat_keyword("BETWEEN") {
            let lo = self.scalar()?;
            if !self.eat_keyword("AND") {
                return Err(err_at(self.pos(), "expected AND in BETWEEN … AND …"));
            }
            let hi = self.scalar()?;
            Expr::Between(left, lo, hi)
        } else if self.eat_keyword("IN") {
            self.expect(Tok::LParen, "'(' after IN")?;
            let mut list = vec![self.scalar()?];
            while self.peek() == Some(&Tok::Comma) {
                self.i += 1;
                list.push(self.scalar()?);
            }
            self.expect(Tok::RParen, "')' closing the IN list")?;
            Expr::In(left, list)
        } else if !negated && self.eat_keyword("IS") {
            let not = self.eat_keyword("NOT");
            if !self.eat_keyword("NULL") {
                return Err(err_at(self.pos(), "expected NULL after IS"));
            }
            let e = Expr::IsNull(left);
            return Ok(if not { Expr::Not(Box::new(e)) } else { e });
        } else {
            return Err(err_at(
                at,
                "expected a comparison (=, <>, <, <=, >, >=), LIKE, BETWEEN, IN or IS NULL",
            ));
        };
        Ok(if negated { Expr::Not(Box::new(e)) } else { e })
    }

    fn eat_comma(&mut self) -> Result<(), FilterError> {
        self.expect(Tok::Comma, "','")
    }

    fn property(&self, name: &str, at: usize) -> Result<usize, FilterError> {
        self.schema
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| err_at(at, unknown_property(name, self.schema)))
    }

    fn scalar(&mut self) -> Result<Scalar, FilterError> {
        let at = self.pos();
        let Some(t) = self.peek().cloned() else {
            return Err(err_at(at, "unexpected end of the filter"));
        };
        self.i += 1;
        Ok(match t {
            Tok::Str(s) => Scalar::Str(s),
            Tok::Num(n) => Scalar::Num(n),
            Tok::Quoted(name) => Scalar::Prop(self.property(&name, at)?),
            Tok::Ident(name) => {
                let upper = name.to_ascii_uppercase();
                let call = self.peek() == Some(&Tok::LParen);
                match upper.as_str() {
                    "TRUE" => Scalar::Bool(true),
                    "FALSE" => Scalar::Bool(false),
                    "DATE" | "TIMESTAMP" if call => {
                        self.i += 1;
                        let a = self.pos();
                        let Some(Tok::Str(s)) = self.peek().cloned() else {
                            return Err(err_at(a, format!("{upper} takes a 'quoted' value")));
                        };
                        self.i += 1;
                        self.expect(Tok::RParen, "')'")?;
                        let (ms, _) = time_span(&s).ok_or_else(|| {
                            err_at(a, format!("'{s}' is not a valid {}", upper.to_lowercase()))
                        })?;
                        Scalar::Time(ms)
                    }
                    "CASEI" | "ACCENTI" if call => {
                        self.i += 1;
                        self.depth += 1;
                        if self.depth > MAX_DEPTH {
                            return Err(err_at(at, "functions nest too deeply"));
                        }
                        let inner = self.scalar()?;
                        self.depth -= 1;
                        self.expect(Tok::RParen, "')'")?;
                        let f = if upper == "CASEI" {
                            Folding::Case
                        } else {
                            Folding::Accent
                        };
                        Scalar::Fold(Box::new(inner), f)
                    }
                    _ if call => {
                        return Err(err_at(at, format!("unknown function {name}()")));
                    }
                    _ => Scalar::Prop(self.property(&name, at)?),
                }
            }
            _ => return Err(err_at(at, "expected a property, a value or a function")),
        })
    }

    fn geometry_operand(&mut self) -> Result<GeomOperand, FilterError> {
        let at = self.pos();
        match self.peek().cloned() {
            Some(Tok::Ident(name)) | Some(Tok::Quoted(name))
                if self.toks.get(self.i + 1).map(|t| &t.1) != Some(&Tok::LParen) =>
            {
                self.i += 1;
                if is_geometry_property(&name) {
                    Ok(GeomOperand::Property)
                } else {
                    Err(err_at(
                        at,
                        format!("'{name}' is not the geometry; the spatial property is 'geometry'"),
                    ))
                }
            }
            Some(Tok::Ident(kw)) => {
                self.i += 1;
                self.expect(Tok::LParen, "'('")?;
                let upper = kw.to_ascii_uppercase();
                let g = if upper == "BBOX" {
                    let mut n = Vec::new();
                    loop {
                        match self.peek() {
                            Some(Tok::Num(x)) => {
                                n.push(*x);
                                self.i += 1;
                            }
                            _ => return Err(err_at(self.pos(), "BBOX takes 4 or 6 numbers")),
                        }
                        if self.peek() == Some(&Tok::Comma) {
                            self.i += 1;
                        } else {
                            break;
                        }
                    }
                    self.expect(Tok::RParen, "')' closing BBOX")?;
                    bbox_geometry(&n).map_err(|m| err_at(at, m))?
                } else {
                    // WKT: re-read the literal's text (balanced parentheses) with geozero.
                    let start_tok = self.i - 2;
                    let mut depth = 1;
                    while depth > 0 {
                        match self.peek() {
                            Some(Tok::LParen) => depth += 1,
                            Some(Tok::RParen) => depth -= 1,
                            None => return Err(err_at(at, "unclosed geometry literal")),
                            _ => {}
                        }
                        self.i += 1;
                    }
                    let wkt = self.text_between(start_tok, self.i);
                    parse_wkt(&wkt).map_err(|m| err_at(at, m))?
                };
                Ok(GeomOperand::Literal(g))
            }
            _ => Err(err_at(
                at,
                "expected the geometry property or a geometry literal",
            )),
        }
    }

    /// Source text of tokens [a, b).
    fn text_between(&self, a: usize, b: usize) -> String {
        let start = self.toks.get(a).map_or(0, |t| t.0);
        let end = self.toks.get(b).map_or(self.end, |t| t.0);
        self.chars.get(start..end).unwrap_or(&[]).iter().collect()
    }
}

enum GeomOperand {
    Property,
    Literal(Geometry<f64>),
}

fn is_geometry_property(name: &str) -> bool {
    matches!(name, "geometry" | "geom" | "the_geom")
}

fn unknown_property(name: &str, schema: &[Field]) -> String {
    format!(
        "'{name}' is not a queryable of this collection (see /queryables): {}",
        schema
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn bbox_geometry(n: &[f64]) -> Result<Geometry<f64>, String> {
    let (x0, y0, x1, y1) = match n.len() {
        4 => (n[0], n[1], n[2], n[3]),
        6 => (n[0], n[1], n[3], n[4]),
        k => return Err(format!("BBOX takes 4 or 6 numbers, got {k}")),
    };
    if x0 > x1 || y0 > y1 {
        return Err("BBOX minimum is greater than its maximum".into());
    }
    Ok(Geometry::Rect(geo::Rect::new(
        geo::coord! {x: x0, y: y0},
        geo::coord! {x: x1, y: y1},
    )))
}

fn parse_wkt(wkt: &str) -> Result<Geometry<f64>, String> {
    use geozero::ToGeo;
    geozero::wkt::Wkt(wkt)
        .to_geo()
        .map_err(|e| format!("bad geometry literal '{wkt}': {e}"))
}

/// Parses a CQL2 text filter against the layer's schema.
pub fn parse_text(s: &str, schema: &[Field]) -> Result<Expr, FilterError> {
    let toks = lex(s)?;
    let chars: Vec<char> = s.chars().collect();
    let mut p = Parser {
        toks,
        i: 0,
        end: chars.len(),
        schema,
        chars,
        depth: 0,
    };
    if p.toks.is_empty() {
        return Err(err_at(0, "the filter is empty"));
    }
    let e = p.or()?;
    if p.i < p.toks.len() {
        return Err(err_at(
            p.pos(),
            "unexpected text after the end of the expression",
        ));
    }
    Ok(e)
}

// ---------------------------------------------------------------- CQL2 JSON

fn jerr(msg: impl std::fmt::Display) -> FilterError {
    FilterError(format!("filter (cql2-json) error: {msg}"))
}

/// Parses a CQL2 JSON filter against the layer's schema.
pub fn parse_json(s: &str, schema: &[Field]) -> Result<Expr, FilterError> {
    let v: Value = serde_json::from_str(s).map_err(|e| {
        FilterError(format!(
            "filter (cql2-json) is not valid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    json_expr(&v, schema)
}

fn json_args(v: &Value) -> Result<&Vec<Value>, FilterError> {
    v["args"]
        .as_array()
        .ok_or_else(|| jerr(format!("'{}' needs an \"args\" array", v["op"])))
}

fn json_expr(v: &Value, schema: &[Field]) -> Result<Expr, FilterError> {
    if let Some(b) = v.as_bool() {
        return Ok(Expr::Bool(b));
    }
    let op = v["op"]
        .as_str()
        .ok_or_else(|| jerr(format!("expected an object with \"op\", got {v}")))?;
    let args = json_args(v)?;
    let arity = |n: usize| {
        if args.len() == n {
            Ok(())
        } else {
            Err(jerr(format!(
                "'{op}' takes {n} arguments, got {}",
                args.len()
            )))
        }
    };
    let sc = |a: &Value| json_scalar(a, schema);
    Ok(match op.to_ascii_lowercase().as_str() {
        "and" | "or" => {
            let parts = args
                .iter()
                .map(|a| json_expr(a, schema))
                .collect::<Result<Vec<_>, _>>()?;
            if op.eq_ignore_ascii_case("and") {
                Expr::And(parts)
            } else {
                Expr::Or(parts)
            }
        }
        "not" => {
            arity(1)?;
            Expr::Not(Box::new(json_expr(&args[0], schema)?))
        }
        cmp if CmpOp::parse(cmp).is_some() => {
            arity(2)?;
            let c = CmpOp::parse(cmp).ok_or_else(|| jerr("unknown operator"))?;
            Expr::Cmp(c, sc(&args[0])?, sc(&args[1])?)
        }
        "like" => {
            arity(2)?;
            let pattern =
                const_string(&sc(&args[1])?).ok_or_else(|| jerr("like needs a pattern string"))?;
            Expr::Like(sc(&args[0])?, LikePattern::compile(&pattern))
        }
        "between" => {
            arity(3)?;
            Expr::Between(sc(&args[0])?, sc(&args[1])?, sc(&args[2])?)
        }
        "in" => {
            arity(2)?;
            let list = args[1]
                .as_array()
                .ok_or_else(|| jerr("in takes a value and an array"))?
                .iter()
                .map(sc)
                .collect::<Result<Vec<_>, _>>()?;
            Expr::In(sc(&args[0])?, list)
        }
        "isnull" => {
            arity(1)?;
            Expr::IsNull(sc(&args[0])?)
        }
        "s_intersects" => {
            arity(2)?;
            let (a, b) = (&args[0], &args[1]);
            let prop = |x: &Value| x["property"].as_str().is_some_and(is_geometry_property);
            let lit = if prop(a) {
                b
            } else if prop(b) {
                a
            } else {
                return Err(jerr(
                    "s_intersects takes {\"property\": \"geometry\"} and a geometry",
                ));
            };
            Expr::SIntersects(json_geometry(lit)?)
        }
        other => return Err(jerr(format!("unsupported operator '{other}'"))),
    })
}

fn json_geometry(v: &Value) -> Result<Geometry<f64>, FilterError> {
    if let Some(b) = v["bbox"].as_array() {
        let n: Vec<f64> = b.iter().filter_map(Value::as_f64).collect();
        return bbox_geometry(&n).map_err(jerr);
    }
    let g: geojson::Geometry = serde_json::from_value(v.clone())
        .map_err(|e| jerr(format!("bad GeoJSON geometry literal: {e}")))?;
    Geometry::<f64>::try_from(g).map_err(|e| jerr(format!("bad geometry literal: {e}")))
}

fn json_scalar(v: &Value, schema: &[Field]) -> Result<Scalar, FilterError> {
    Ok(match v {
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Number(n) => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Object(o) => {
            if let Some(p) = o.get("property").and_then(Value::as_str) {
                Scalar::Prop(
                    schema
                        .iter()
                        .position(|f| f.name == p)
                        .ok_or_else(|| jerr(unknown_property(p, schema)))?,
                )
            } else if let Some(d) = o.get("date").or(o.get("timestamp")).and_then(Value::as_str) {
                Scalar::Time(
                    time_span(d)
                        .ok_or_else(|| jerr(format!("'{d}' is not a valid date/timestamp")))?
                        .0,
                )
            } else if let Some(op) = o.get("op").and_then(Value::as_str) {
                let f = match op.to_ascii_lowercase().as_str() {
                    "casei" => Folding::Case,
                    "accenti" => Folding::Accent,
                    other => return Err(jerr(format!("unsupported function '{other}'"))),
                };
                let a = json_args(v)?;
                let inner = a
                    .first()
                    .ok_or_else(|| jerr(format!("{op} takes one argument")))?;
                Scalar::Fold(Box::new(json_scalar(inner, schema)?), f)
            } else {
                return Err(jerr(format!(
                    "expected a property, value or function, got {v}"
                )));
            }
        }
        other => return Err(jerr(format!("unsupported value {other}"))),
    })
}

// ---------------------------------------------------------------- evaluation

/// A value during evaluation.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Time(i64),
}

/// A literal string, with any CASEI/ACCENTI applied (a LIKE pattern).
fn const_string(s: &Scalar) -> Option<String> {
    match s {
        Scalar::Str(x) => Some(x.clone()),
        Scalar::Fold(inner, f) => const_string(inner).map(|x| fold(&x, *f)),
        _ => None,
    }
}

fn fold(s: &str, f: Folding) -> String {
    match f {
        Folding::Case => s.to_lowercase(),
        // The DataHub's one accent table (layers::text), shared with search and joins.
        Folding::Accent => layers::text::strip_accents(s),
    }
}

/// A feature as the evaluator sees it: its properties by schema index, and its
/// geometry when the filter has a spatial test.
pub struct Row<'a> {
    pub values: &'a [Option<RawValue<'a>>],
    pub schema: &'a [Field],
    pub geometry: Option<&'a Geometry<f64>>,
}

impl Expr {
    /// Applies `f` to every geometry literal (e.g. from `filter-crs` to lon/lat).
    pub fn map_geometries(
        &mut self,
        f: &mut dyn FnMut(&mut Geometry<f64>) -> Result<(), String>,
    ) -> Result<(), String> {
        match self {
            Expr::SIntersects(g) => {
                // A Rect stays a Rect only in its own CRS: transform its outline.
                if let Geometry::Rect(r) = g {
                    *g = Geometry::Polygon(r.to_polygon());
                }
                f(g)
            }
            Expr::And(v) | Expr::Or(v) => v.iter_mut().try_for_each(|e| e.map_geometries(f)),
            Expr::Not(e) => e.map_geometries(f),
            _ => Ok(()),
        }
    }

    pub fn needs_geometry(&self) -> bool {
        match self {
            Expr::SIntersects(_) => true,
            Expr::And(v) | Expr::Or(v) => v.iter().any(Expr::needs_geometry),
            Expr::Not(e) => e.needs_geometry(),
            _ => false,
        }
    }

    /// A lon/lat box every match lies in, for the R-tree: from a spatial test that
    /// must hold (top level, or inside AND).
    pub fn required_bbox(&self) -> Option<[f64; 4]> {
        match self {
            Expr::SIntersects(g) => g
                .bounding_rect()
                .map(|r| [r.min().x, r.min().y, r.max().x, r.max().y]),
            Expr::And(v) => v.iter().filter_map(Expr::required_bbox).reduce(|a, b| {
                [
                    a[0].max(b[0]),
                    a[1].max(b[1]),
                    a[2].min(b[2]),
                    a[3].min(b[3]),
                ]
            }),
            _ => None,
        }
    }

    /// `Some(true)` match, `Some(false)` no match, `None` unknown (a null was involved).
    pub fn eval(&self, row: &Row<'_>) -> Option<bool> {
        match self {
            Expr::Bool(b) => Some(*b),
            // AND stops at the first false, OR at the first true; otherwise an
            // unknown part makes the whole unknown.
            Expr::And(v) => decide(v.iter().map(|e| e.eval(row)), false),
            Expr::Or(v) => decide(v.iter().map(|e| e.eval(row)), true),
            Expr::Not(e) => e.eval(row).map(|b| !b),
            Expr::Cmp(op, a, b) => {
                let (a, b) = (value(a, row)?, value(b, row)?);
                let o = compare(&a, &b)?;
                Some(match op {
                    CmpOp::Eq => o == std::cmp::Ordering::Equal,
                    CmpOp::Ne => o != std::cmp::Ordering::Equal,
                    CmpOp::Lt => o == std::cmp::Ordering::Less,
                    CmpOp::Le => o != std::cmp::Ordering::Greater,
                    CmpOp::Gt => o == std::cmp::Ordering::Greater,
                    CmpOp::Ge => o != std::cmp::Ordering::Less,
                })
            }
            Expr::Like(a, pattern) => match value(a, row)? {
                Val::Str(s) => Some(pattern.matches(&s)),
                _ => Some(false),
            },
            Expr::In(a, list) => {
                let a = value(a, row)?;
                let eq = list.iter().map(|x| {
                    value(x, row)
                        .and_then(|x| compare(&a, &x))
                        .map(|o| o == std::cmp::Ordering::Equal)
                });
                decide(eq, true)
            }
            Expr::Between(a, lo, hi) => {
                let (a, lo, hi) = (value(a, row)?, value(lo, row)?, value(hi, row)?);
                Some(
                    compare(&a, &lo)? != std::cmp::Ordering::Less
                        && compare(&a, &hi)? != std::cmp::Ordering::Greater,
                )
            }
            Expr::IsNull(a) => Some(value(a, row).is_none()),
            Expr::SIntersects(g) => Some(row.geometry.is_some_and(|f| f.intersects(g))),
        }
    }
}

/// Three-valued reduction: `stop` as soon as a part is `stop`, unknown if any part
/// was unknown, else `!stop`.
fn decide(parts: impl Iterator<Item = Option<bool>>, stop: bool) -> Option<bool> {
    let mut unknown = false;
    for p in parts {
        match p {
            Some(b) if b == stop => return Some(stop),
            None => unknown = true,
            Some(_) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(!stop)
    }
}

fn value(s: &Scalar, row: &Row<'_>) -> Option<Val> {
    Some(match s {
        Scalar::Str(x) => Val::Str(x.clone()),
        Scalar::Num(n) => Val::Num(*n),
        Scalar::Bool(b) => Val::Bool(*b),
        Scalar::Time(t) => Val::Time(*t),
        Scalar::Fold(inner, f) => match value(inner, row)? {
            Val::Str(x) => Val::Str(fold(&x, *f)),
            other => other,
        },
        Scalar::Prop(i) => {
            let v = row.values.get(*i)?.as_ref()?;
            let t = row.schema.get(*i).map(|f| f.ftype);
            match v {
                RawValue::Bool(b) => Val::Bool(*b),
                RawValue::I64(n) => Val::Num(*n as f64),
                RawValue::U64(n) => Val::Num(*n as f64),
                RawValue::F64(x) => Val::Num(*x),
                RawValue::Str(b) => {
                    let s = String::from_utf8_lossy(b).into_owned();
                    match t {
                        // Stored as ISO text; compared as instants.
                        Some(FieldType::Date | FieldType::Datetime) => {
                            Val::Time(time_span(&s).map(|t| t.0)?)
                        }
                        _ => Val::Str(s),
                    }
                }
            }
        }
    })
}

fn compare(a: &Val, b: &Val) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y),
        (Val::Str(x), Val::Str(y)) => Some(x.cmp(y)),
        (Val::Bool(x), Val::Bool(y)) => Some(x.cmp(y)),
        (Val::Time(x), Val::Time(y)) => Some(x.cmp(y)),
        // A date written as a plain string against a date property.
        (Val::Time(x), Val::Str(y)) => time_span(y).map(|t| x.cmp(&t.0)),
        (Val::Str(x), Val::Time(y)) => time_span(x).map(|t| t.0.cmp(y)),
        // Mixed types never compare equal (and are not ordered).
        _ => None,
    }
}

/// One element of a LIKE pattern between `%`s.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    /// `_`: any one character.
    One,
    Ch(char),
}

/// A SQL LIKE pattern (`%` any run, `_` one character, `\` escapes the next),
/// compiled once per request: the runs between `%`s, with repeated `%`s collapsed.
/// Matching takes the first segment at the start, the last at the end and each
/// middle one at its leftmost place (which is always safe for `%…%` patterns), so
/// a value is scanned once per segment instead of once per pattern character as
/// in the dynamic-programming form: `'%%%…%x'` with thousands of wildcards costs
/// what `'%x'` costs.
#[derive(Debug, Clone, PartialEq)]
pub struct LikePattern {
    /// Runs of units separated by `%`; `segments.len() == 1` means no `%` at all.
    segments: Vec<Vec<Unit>>,
    /// Each segment as plain text when it has no `_` (found with `str::find`, a
    /// linear-time substring search, instead of trying every position).
    literals: Vec<Option<String>>,
}

impl LikePattern {
    pub fn compile(pattern: &str) -> LikePattern {
        let mut segments = vec![Vec::new()];
        let mut it = pattern.chars();
        while let Some(c) = it.next() {
            let u = match c {
                '%' => {
                    // `%%` is `%`: an empty middle segment matches anywhere.
                    if segments.last().is_some_and(|s| !s.is_empty()) || segments.len() == 1 {
                        segments.push(Vec::new());
                    }
                    continue;
                }
                '_' => Unit::One,
                '\\' => Unit::Ch(it.next().unwrap_or('\\')),
                c => Unit::Ch(c),
            };
            if let Some(last) = segments.last_mut() {
                last.push(u);
            }
        }
        let literals = segments
            .iter()
            .map(|seg| {
                seg.iter()
                    .map(|u| match u {
                        Unit::Ch(c) => Some(*c),
                        Unit::One => None,
                    })
                    .collect::<Option<String>>()
            })
            .collect();
        LikePattern { segments, literals }
    }

    pub fn matches(&self, value: &str) -> bool {
        // The byte index just after `seg` when it matches at byte `i`.
        let at = |seg: &[Unit], i: usize| -> Option<usize> {
            let mut chars = value[i..].char_indices();
            for u in seg {
                let (_, c) = chars.next()?;
                if let Unit::Ch(x) = u {
                    if *x != c {
                        return None;
                    }
                }
            }
            Some(chars.next().map_or(value.len(), |(j, _)| i + j))
        };
        let Some((first, rest)) = self.segments.split_first() else {
            return value.is_empty();
        };
        let Some(mut pos) = at(first, 0) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return pos == value.len();
        };
        for (k, seg) in middle.iter().enumerate() {
            if seg.is_empty() {
                continue;
            }
            let found = match &self.literals[k + 1] {
                Some(lit) => value[pos..].find(lit.as_str()).map(|j| pos + j + lit.len()),
                None => value[pos..]
                    .char_indices()
                    .find_map(|(j, _)| at(seg, pos + j)),
            };
            match found {
                Some(end) => pos = end,
                None => return false,
            }
        }
        // The last segment is anchored at the end and must not overlap what the
        // earlier ones took.
        if last.is_empty() {
            return true;
        }
        match value[pos..].char_indices().rev().nth(last.len() - 1) {
            Some((j, _)) => at(last, pos + j) == Some(value.len()),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Vec<Field> {
        let f = |n: &str, t| Field {
            name: n.into(),
            ftype: t,
        };
        vec![
            f("landsat:scene_id", FieldType::String),
            f("eo:cloud_cover", FieldType::Float),
            f("name", FieldType::String),
            f("value", FieldType::Long),
            f("updated", FieldType::Datetime),
            f("category", FieldType::String),
            f("fecha", FieldType::Date),
        ]
    }

    fn row_eval(
        filter: &str,
        values: Vec<Option<RawValue<'_>>>,
        g: Option<Geometry<f64>>,
    ) -> Option<bool> {
        let s = schema();
        let e = parse_text(filter, &s).unwrap_or_else(|e| panic!("{filter}: {}", e.0));
        e.eval(&Row {
            values: &values,
            schema: &s,
            geometry: g.as_ref(),
        })
    }

    /// Examples in the style of the CQL2 standard's Annex B, text and JSON alike.
    #[test]
    fn standard_examples_parse_and_agree_with_their_json() {
        let s = schema();
        let pairs = [
            (
                "landsat:scene_id = 'LC82030282019133LGN00'",
                r#"{"op":"=","args":[{"property":"landsat:scene_id"},"LC82030282019133LGN00"]}"#,
            ),
            (
                "eo:cloud_cover BETWEEN 0.1 AND 0.2",
                r#"{"op":"between","args":[{"property":"eo:cloud_cover"},0.1,0.2]}"#,
            ),
            (
                "name LIKE 'Smith%'",
                r#"{"op":"like","args":[{"property":"name"},"Smith%"]}"#,
            ),
            (
                "category IN ('a', 'b')",
                r#"{"op":"in","args":[{"property":"category"},["a","b"]]}"#,
            ),
            (
                "value IS NULL",
                r#"{"op":"isNull","args":[{"property":"value"}]}"#,
            ),
            (
                "NOT (value IS NULL)",
                r#"{"op":"not","args":[{"op":"isNull","args":[{"property":"value"}]}]}"#,
            ),
            (
                "updated > TIMESTAMP('2017-06-10T07:30:00Z') AND value >= 10",
                r#"{"op":"and","args":[{"op":">","args":[{"property":"updated"},{"timestamp":"2017-06-10T07:30:00Z"}]},{"op":">=","args":[{"property":"value"},10]}]}"#,
            ),
            (
                "S_INTERSECTS(geometry,POLYGON((-10.0 50.0,10.0 50.0,10.0 60.0,-10.0 60.0,-10.0 50.0)))",
                r#"{"op":"s_intersects","args":[{"property":"geometry"},{"type":"Polygon","coordinates":[[[-10,50],[10,50],[10,60],[-10,60],[-10,50]]]}]}"#,
            ),
            (
                "S_INTERSECTS(geometry, BBOX(-10, 50, 10, 60))",
                r#"{"op":"s_intersects","args":[{"property":"geometry"},{"bbox":[-10,50,10,60]}]}"#,
            ),
            (
                "CASEI(name) = casei('SMITH') OR fecha < DATE('2020-01-01')",
                r#"{"op":"or","args":[{"op":"=","args":[{"op":"casei","args":[{"property":"name"}]},{"op":"casei","args":["SMITH"]}]},{"op":"<","args":[{"property":"fecha"},{"date":"2020-01-01"}]}]}"#,
            ),
        ];
        for (text, json) in pairs {
            let a = parse_text(text, &s).unwrap_or_else(|e| panic!("{text}: {}", e.0));
            let b = parse_json(json, &s).unwrap_or_else(|e| panic!("{json}: {}", e.0));
            match (&a, &b) {
                // WKT polygon vs GeoJSON polygon, and BBOX vs bbox: same geometry.
                (Expr::SIntersects(x), Expr::SIntersects(y)) => {
                    assert_eq!(x.bounding_rect(), y.bounding_rect(), "{text}")
                }
                _ => assert_eq!(a, b, "{text}"),
            }
        }
    }

    #[test]
    fn three_valued_logic_and_operators() {
        let none = || vec![None; 7];
        let mut v = none();
        v[2] = Some(RawValue::Str("Niños Héroes".as_bytes()));
        v[3] = Some(RawValue::I64(42));
        for (filter, want) in [
            ("value = 42 AND name LIKE 'Ni_os%'", Some(true)),
            ("value <> 42", Some(false)),
            ("value BETWEEN 40 AND 42", Some(true)),
            ("value NOT BETWEEN 40 AND 42", Some(false)),
            ("value IN (1, 42)", Some(true)),
            ("value NOT IN (1, 2)", Some(true)),
            ("ACCENTI(CASEI(name)) LIKE 'ninos%'", Some(true)),
            ("name LIKE 'ninos%'", Some(false)),
            // Null category: comparisons are unknown, IS NULL is true, NOT unknown
            // stays unknown, OR with a true part is true, AND with a false part false.
            ("category = 'a'", None),
            ("NOT category = 'a'", None),
            ("category IS NULL", Some(true)),
            ("category = 'a' OR value = 42", Some(true)),
            ("category = 'a' AND value = 1", Some(false)),
        ] {
            assert_eq!(row_eval(filter, v.clone(), None), want, "{filter}");
        }
        let mut d = none();
        d[6] = Some(RawValue::Str(b"2025-07-10"));
        assert_eq!(
            row_eval("fecha >= DATE('2025-07-01')", d.clone(), None),
            Some(true)
        );
        assert_eq!(row_eval("fecha = '2025-07-10'", d, None), Some(true));
        let p = Geometry::Point(geo::Point::new(-100.3, 25.7));
        assert_eq!(
            row_eval(
                "S_INTERSECTS(geometry, BBOX(-100.4,25.6,-100.2,25.8))",
                none(),
                Some(p.clone())
            ),
            Some(true)
        );
        assert_eq!(
            row_eval(
                "S_INTERSECTS(geometry, POINT(-100.3 25.7))",
                none(),
                Some(p)
            ),
            Some(true)
        );
        assert!(like("100%", "100\\%"));
        assert!(!like("1000", "100\\%"));
    }

    fn like(s: &str, p: &str) -> bool {
        LikePattern::compile(p).matches(s)
    }

    /// The textbook dynamic-programming LIKE, as the oracle for the compiled one.
    fn like_dp(s: &str, pattern: &str) -> bool {
        let mut p = Vec::new();
        let mut it = pattern.chars();
        while let Some(c) = it.next() {
            p.push(match c {
                '%' => None,
                '_' => Some(None),
                '\\' => Some(Some(it.next().unwrap_or('\\'))),
                c => Some(Some(c)),
            });
        }
        let s: Vec<char> = s.chars().collect();
        let mut dp = vec![false; s.len() + 1];
        dp[0] = true;
        for tok in &p {
            let mut next = vec![false; s.len() + 1];
            match tok {
                None => {
                    let mut seen = false;
                    for j in 0..=s.len() {
                        seen |= dp[j];
                        next[j] = seen;
                    }
                }
                Some(c) => {
                    for j in 1..=s.len() {
                        next[j] = dp[j - 1] && c.is_none_or(|c| s[j - 1] == c);
                    }
                }
            }
            dp = next;
        }
        dp[s.len()]
    }

    #[test]
    fn like_agrees_with_the_textbook_algorithm() {
        // Every pattern and value over a small alphabet, up to 5 and 6 characters.
        let alphabet = ['a', 'b', '%', '_'];
        let mut patterns = vec![String::new()];
        for _ in 0..5 {
            let more: Vec<String> = patterns
                .iter()
                .flat_map(|p| alphabet.iter().map(move |c| format!("{p}{c}")))
                .collect();
            patterns.extend(more);
            patterns.sort();
            patterns.dedup();
        }
        let mut values = vec![String::new()];
        for _ in 0..6 {
            let more: Vec<String> = values
                .iter()
                .flat_map(|v| ['a', 'b'].iter().map(move |c| format!("{v}{c}")))
                .collect();
            values.extend(more);
            values.sort();
            values.dedup();
        }
        for p in &patterns {
            let c = LikePattern::compile(p);
            for v in &values {
                assert_eq!(c.matches(v), like_dp(v, p), "{v:?} LIKE {p:?}");
            }
        }
        assert!(like("Niños", "Ni_os"));
        assert!(like("a%b", "a\\%b"));
        assert!(!like("axb", "a\\%b"));
    }

    #[test]
    fn like_with_thousands_of_wildcards_is_cheap() {
        let p = format!("{}x", "%".repeat(4000));
        let c = LikePattern::compile(&p);
        assert_eq!(c.segments.len(), 2);
        let v = "y".repeat(10_000);
        assert!(!c.matches(&v));
        let p = format!("{}x", "%_".repeat(2000));
        let c = LikePattern::compile(&p);
        assert!(!c.matches(&v));
        assert!(c.matches(&format!("{}x", "y".repeat(2000))));
    }

    #[test]
    fn errors_name_the_position() {
        let s = schema();
        for (f, pos, needle) in [
            ("value = ", 9, "end of the filter"),
            ("value == 3", 8, "expected a property"),
            ("nombre = 'x'", 1, "'nombre' is not a queryable"),
            ("value = 3 AND", 14, "end of the filter"),
            ("name = 'abc", 8, "unterminated"),
            ("value BETWEEN 1 OR 3", 17, "expected AND"),
            ("(value = 3", 11, "expected ')'"),
            ("S_INTERSECTS(name, BBOX(1,2,3,4))", 14, "not the geometry"),
            (
                "S_INTERSECTS(geometry, POLYGON((1 2, 3)))",
                24,
                "bad geometry literal",
            ),
            ("value = 3 value", 11, "unexpected text"),
            ("FOO(value) = 1", 1, "unknown function"),
            (
                format!("{}value = 1", "(".repeat(100_000)).as_str(),
                65,
                "deeper than 64",
            ),
            (
                format!("{}value = 1", "NOT ".repeat(100_000)).as_str(),
                257,
                "deeper than 64",
            ),
        ] {
            let e = parse_text(f, &s).unwrap_err();
            assert!(
                e.0.contains(&format!("at character {pos}:")) && e.0.contains(needle),
                "{f}: {}",
                e.0
            );
        }
        let e = parse_json(r#"{"op":"=","args":[{"property":"x"},1]}"#, &s).unwrap_err();
        assert!(e.0.contains("'x' is not a queryable"), "{}", e.0);
        let e = parse_json(r#"{"op":"=","args":[1"#, &s).unwrap_err();
        assert!(e.0.contains("line 1 column"), "{}", e.0);
    }
}
