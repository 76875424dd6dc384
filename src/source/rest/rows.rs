//! The fast path from a REST page body to rows: records read straight into the table's columns
//! by field name, one allocation per row. Anything unusual falls back to [`super::records`],
//! whose messages it keeps.

use std::collections::HashMap;

use serde_json::Value;

use crate::source::Page;

/// Separator between the names of nested fields in a column name.
pub const NEST: &str = "__";

/// Records read straight from JSON into rows, as [`records_page`] builds them from
/// [`flatten`]ed records: columns in first-seen order (the API's field order), nested objects
/// flattened with [`NEST`], arrays as their JSON text, NULL where a record lacks a field.
/// Field names are matched against the columns as bytes, without being copied (a name other
/// than the expected column's is checked as UTF-8 before it is looked up), so a page costs
/// one allocation per row (and one per text value). Anything else fails, and the page takes the general path
/// with its messages: a record that is not an object, two fields of one record that name one
/// column, or a name that is not UTF-8.
#[derive(Default)]
pub(super) struct RowsReader {
    pub(super) columns: Vec<String>,
    pub(super) index: HashMap<String, usize>,
    pub(super) rows: Vec<Vec<Value>>,
    /// Per column, the number (from 1) of the last record that set it: a second value from
    /// the same record is a name collision.
    pub(super) set_by: Vec<usize>,
    /// The current field's column name, after the names of the objects it is nested in.
    pub(super) name: Vec<u8>,
    /// The column the next field probably has: the one after the previous field's.
    pub(super) hint: usize,
}

impl RowsReader {
    /// The page of `raw`, a JSON array of records; `None` where the general path must decide.
    pub(super) fn read(raw: &[u8]) -> Option<Page> {
        let mut reader = RowsReader::default();
        let mut de = serde_json::Deserializer::from_slice(raw);
        serde::de::DeserializeSeed::deserialize(&mut reader, &mut de).ok()?;
        de.end().ok()?;
        let width = reader.columns.len();
        for row in &mut reader.rows {
            row.resize(width, Value::Null);
        }
        Some(Page {
            columns: Some(reader.columns),
            rows: reader.rows,
            sparse: true,
            ..Page::default()
        })
    }

    /// The column named `self.name`, added if new; `None` if the name is not UTF-8.
    pub(super) fn column(&mut self) -> Option<usize> {
        let col = match self.columns.get(self.hint) {
            Some(c) if c.as_bytes() == self.name => self.hint,
            _ => {
                let name = std::str::from_utf8(&self.name).ok()?;
                match self.index.get(name) {
                    Some(&i) => i,
                    None => {
                        self.index.insert(name.to_string(), self.columns.len());
                        self.columns.push(name.to_string());
                        self.set_by.push(0);
                        self.columns.len() - 1
                    }
                }
            }
        };
        self.hint = col + 1;
        Some(col)
    }

    /// Put `v` in the current record's column `self.name`; `false` if the record has one
    /// (or the name is not UTF-8).
    pub(super) fn set(&mut self, v: Value) -> bool {
        let Some(col) = self.column() else {
            return false;
        };
        let record = self.rows.len();
        let Some(row) = self.rows.last_mut() else {
            return false;
        };
        if self.set_by[col] == record {
            return false;
        }
        self.set_by[col] = record;
        if row.len() <= col {
            row.resize(col + 1, Value::Null);
        }
        row[col] = v;
        true
    }

    /// The fields of an object whose own name is `self.name[..prefix]` (top level: 0).
    pub(super) fn fields<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        prefix: usize,
        mut map: A,
    ) -> Result<(), A::Error> {
        while map.next_key_seed(FieldName { r: self, prefix })?.is_some() {
            map.next_value_seed(FieldValue(self))?;
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for &mut RowsReader {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for &mut RowsReader {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Record(&mut *self))?.is_some() {}
        Ok(())
    }
}

/// One record of a [`RowsReader`]: a new row.
pub(super) struct Record<'r>(&'r mut RowsReader);

impl<'de> serde::de::DeserializeSeed<'de> for Record<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Record<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let r = self.0;
        r.rows.push(vec![Value::Null; r.columns.len()]);
        r.hint = 0;
        r.fields(0, map)
    }
}

/// A field's name: written to `name` after its object's name (and [`NEST`]).
pub(super) struct FieldName<'r> {
    pub(super) r: &'r mut RowsReader,
    pub(super) prefix: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldName<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_bytes(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldName<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_bytes<E: serde::de::Error>(self, k: &[u8]) -> Result<(), E> {
        let name = &mut self.r.name;
        name.truncate(self.prefix);
        if self.prefix > 0 {
            name.extend_from_slice(NEST.as_bytes());
        }
        name.extend_from_slice(k);
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<(), E> {
        self.visit_bytes(k.as_bytes())
    }
}

/// A field's value: a scalar goes to the field's column, an object's fields to columns under
/// the field's name, an array to the field's column as its JSON text.
pub(super) struct FieldValue<'r>(&'r mut RowsReader);

impl FieldValue<'_> {
    pub(super) fn put<E: serde::de::Error>(self, v: Value) -> Result<(), E> {
        if self.0.set(v) {
            Ok(())
        } else {
            Err(E::custom("two fields of a record name one column"))
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for FieldValue<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FieldValue<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        self.put(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.put(Value::from(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.put(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.put(Value::from(v))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.put(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<(), E> {
        self.put(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.put(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.put(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        let v = <Value as serde::Deserialize>::deserialize(
            serde::de::value::SeqAccessDeserializer::new(seq),
        )?;
        self.put(Value::String(v.to_string()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let prefix = self.0.name.len();
        self.0.fields(prefix, map)
    }
}
