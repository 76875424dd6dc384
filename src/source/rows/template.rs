//! Request templates of row-driven tables: `{Column}` placeholders in a path, query
//! parameters, headers and a JSON body, filled from one input row.
//!
//! Guarantees:
//! - Every placeholder names an input column; [`Template::check`] says which one does not
//!   before any request is sent. `{{` and `}}` are literal braces.
//! - In a path, each filled value is percent-encoded as one path segment (a `/` in a value
//!   never adds a segment); in query parameters and headers a value is its text.
//! - In a JSON body a string that is exactly one placeholder becomes the column's JSON value
//!   with its type kept (an integer stays a number, NULL stays null); a placeholder inside
//!   longer text is replaced by the value's text.
//! - A NULL cannot be put into a URL or a header: filling one is an error naming the column,
//!   never an empty segment or a silently dropped parameter.

use serde_json::Value;

/// One piece of a template string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    /// Index of the input column.
    Slot(String),
}

/// A template string: text with `{Column}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parse `raw`; an unclosed `{` or a stray `}` is an error saying where.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = raw.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let rest = &raw[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "{raw:?} has a `{{` at byte {i} that is never closed (write `{{{{` for a literal brace)"
                        ));
                    };
                    let name = &rest[..end];
                    if name.is_empty() || name.contains('{') {
                        return Err(format!(
                            "{raw:?} has an empty or nested placeholder at byte {i}"
                        ));
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Slot(name.to_string()));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(format!(
                        "{raw:?} has a `}}` at byte {i} that closes nothing (write `}}}}` for a literal brace)"
                    ));
                }
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Self { pieces })
    }

    /// The placeholders, in order.
    pub fn slots(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Slot(s) => Some(s.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// The single placeholder a template is made of, if that is all it is.
    fn only_slot(&self) -> Option<&str> {
        match self.pieces.as_slice() {
            [Piece::Slot(s)] => Some(s),
            _ => None,
        }
    }

    /// Fill with each value's text; `segment` percent-encodes values as one path segment.
    pub fn fill(&self, row: &Row<'_>, segment: bool) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(name) => {
                    let v = row.get(name)?;
                    let text = value_text(v).ok_or_else(|| {
                        format!(
                            "input column {name:?} is NULL, and a NULL cannot be put into a URL or header (filter such rows out of the input)"
                        )
                    })?;
                    if segment {
                        out.extend(url::form_urlencoded::byte_serialize(text.as_bytes()).map(
                            // form encoding writes a space as `+`; a path segment wants %20
                            |s| if s == "+" { "%20" } else { s },
                        ));
                    } else {
                        out.push_str(&text);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// A value's text in a URL or header: strings as they are, numbers and booleans as JSON
/// writes them; `None` for NULL.
fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One input row: its column names (shared by all rows) and values.
pub struct Row<'a> {
    pub columns: &'a [String],
    pub values: &'a [Value],
}

impl Row<'_> {
    fn get(&self, name: &str) -> Result<&Value, String> {
        self.columns
            .iter()
            .position(|c| c == name)
            .and_then(|i| self.values.get(i))
            .ok_or_else(|| format!("the input has no column {name:?}"))
    }
}

/// A JSON body template: a JSON value whose strings may hold placeholders.
#[derive(Debug, Clone)]
pub enum BodyTemplate {
    Slot(String),
    Text(Template),
    Literal(Value),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    pub fn parse(v: &Value) -> Result<Self, String> {
        Ok(match v {
            Value::String(s) => {
                let t = Template::parse(s)?;
                match t.only_slot() {
                    Some(name) => BodyTemplate::Slot(name.to_string()),
                    None if t.slots().next().is_none() => BodyTemplate::Literal(v.clone()),
                    None => BodyTemplate::Text(t),
                }
            }
            Value::Array(items) => BodyTemplate::Array(
                items
                    .iter()
                    .map(BodyTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => BodyTemplate::Object(
                m.iter()
                    .map(|(k, v)| Ok((k.clone(), BodyTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => BodyTemplate::Literal(other.clone()),
        })
    }

    pub fn slots(&self) -> Vec<&str> {
        match self {
            BodyTemplate::Slot(s) => vec![s.as_str()],
            BodyTemplate::Text(t) => t.slots().collect(),
            BodyTemplate::Literal(_) => vec![],
            BodyTemplate::Array(items) => items.iter().flat_map(BodyTemplate::slots).collect(),
            BodyTemplate::Object(m) => m.iter().flat_map(|(_, v)| v.slots()).collect(),
        }
    }

    pub fn fill(&self, row: &Row<'_>) -> Result<Value, String> {
        Ok(match self {
            BodyTemplate::Slot(name) => row.get(name)?.clone(),
            BodyTemplate::Text(t) => Value::String(t.fill(row, false)?),
            BodyTemplate::Literal(v) => v.clone(),
            BodyTemplate::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.fill(row))
                    .collect::<Result<_, _>>()?,
            ),
            BodyTemplate::Object(m) => {
                let mut out = serde_json::Map::new();
                for (k, v) in m {
                    out.insert(k.clone(), v.fill(row)?);
                }
                Value::Object(out)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> (Vec<String>, Vec<Value>) {
        (
            vec!["id".into(), "name".into(), "n".into(), "gone".into()],
            vec![json!("A B/C"), json!("Zoë"), json!(42), Value::Null],
        )
    }

    #[test]
    fn placeholders_fill_paths_text_and_typed_bodies() {
        let (c, v) = row();
        let r = Row {
            columns: &c,
            values: &v,
        };
        let t = Template::parse("/customers/{id}/n-{n}").unwrap();
        assert_eq!(t.slots().collect::<Vec<_>>(), ["id", "n"]);
        assert_eq!(t.fill(&r, true).unwrap(), "/customers/A%20B%2FC/n-42");
        assert_eq!(
            Template::parse("{{x}} {name}")
                .unwrap()
                .fill(&r, false)
                .unwrap(),
            "{x} Zoë"
        );
        let b = BodyTemplate::parse(
            &json!({"n": "{n}", "label": "#{n} {name}", "gone": "{gone}", "k": [1, "{id}"]}),
        )
        .unwrap();
        assert_eq!(
            b.fill(&r).unwrap(),
            json!({"n": 42, "label": "#42 Zoë", "gone": null, "k": [1, "A B/C"]})
        );
        assert_eq!(b.slots(), ["gone", "id", "n", "name", "n"]);
    }

    #[test]
    fn bad_templates_and_nulls_are_refused() {
        assert!(
            Template::parse("/a/{id")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            Template::parse("/a/}")
                .unwrap_err()
                .contains("closes nothing")
        );
        assert!(Template::parse("/a/{}").is_err());
        let (c, v) = row();
        let r = Row {
            columns: &c,
            values: &v,
        };
        let e = Template::parse("/x/{gone}")
            .unwrap()
            .fill(&r, true)
            .unwrap_err();
        assert!(e.contains("NULL"), "{e}");
        let e = Template::parse("/x/{nope}")
            .unwrap()
            .fill(&r, true)
            .unwrap_err();
        assert!(e.contains("no column \"nope\""), "{e}");
    }
}
