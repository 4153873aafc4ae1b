//! Ordered JSON for the Mesos simulator. serde_json (built without
//! `preserve_order`) sorts object keys; the captures have Mesos' own order
//! (`type` first in 1.5, protobuf field order inside), and clients that
//! compare bytes or trip over order should see what a real master sends.
//! Strings are escaped by serde_json, then `/` becomes `\/` as Mesos
//! (picojson / stout) writes it.

use std::fmt::Write;

/// A JSON value whose objects keep their field order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum J {
    Bool(bool),
    Int(i64),
    /// Rendered the way Mesos does: `15.0`, `1520884849.15991`.
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(&'static str, J)>),
}

pub(crate) fn s(text: impl Into<String>) -> J {
    J::Str(text.into())
}

pub(crate) fn obj(fields: Vec<(&'static str, J)>) -> J {
    J::Obj(fields)
}

/// Protobuf-JSON id: `{"value": "…"}`.
pub(crate) fn id(value: &str) -> J {
    obj(vec![("value", s(value))])
}

impl J {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Add a field to an object (no-op on anything else).
    pub(crate) fn push(&mut self, key: &'static str, value: J) {
        if let J::Obj(fields) = self {
            fields.push((key, value));
        }
    }

    fn write(&self, out: &mut String) {
        match self {
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Int(i) => {
                let _ = write!(out, "{i}");
            }
            // JSON has no NaN or infinity; Mesos never sends them either.
            J::Float(f) if !f.is_finite() => out.push_str("0.0"),
            J::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            J::Str(text) => write_str(out, text),
            J::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(out: &mut String, text: &str) {
    // serde_json never fails on a str; `/` only ever occurs inside strings.
    let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
    out.push_str(&quoted.replace('/', "\\/"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_floats_and_slash_escapes_are_mesos_like() {
        let v = obj(vec![
            ("type", s("SUBSCRIBED")),
            ("a", J::Float(15.0)),
            ("url", s("http://x/\"y\"")),
            ("n", J::Arr(vec![J::Int(1), J::Bool(true)])),
        ]);
        let text = v.render();
        assert_eq!(
            text,
            r#"{"type":"SUBSCRIBED","a":15.0,"url":"http:\/\/x\/\"y\"","n":[1,true]}"#
        );
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(back["url"], "http://x/\"y\"");
    }
}
