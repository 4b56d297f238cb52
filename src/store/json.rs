//! Stored JSON is data, not code: what a run returned is kept with a bounded
//! depth (and, by the writer, a bounded size), and whatever text a row holds
//! reads back as some value.
//!
//! Architecture Invariant: no read of the history fails because of one stored
//! value. A value deeper than [`JSON_DEPTH_BOUND`] is cut when written (and
//! again when read, for rows an older gatherd wrote); a text that does not
//! parse (an older gatherd, a hand edit) reads as a marker string.

use serde_json::Value;

use super::JSON_DEPTH_BOUND;

/// Whether `value` nests deeper than `levels` (a scalar or an empty array or
/// object is one level). Looks no deeper than `levels`.
fn deeper_than(value: &Value, levels: usize) -> bool {
    match value {
        Value::Array(items) if !items.is_empty() => levels <= 1 || items.iter().any(|v| deeper_than(v, levels - 1)),
        Value::Object(map) if !map.is_empty() => levels <= 1 || map.values().any(|v| deeper_than(v, levels - 1)),
        _ => levels == 0,
    }
}

/// `value` with every non-empty array or object at level `levels` replaced
/// by the marker.
fn cut(value: &Value, levels: usize) -> Value {
    let deeper = || Value::String(format!("… nested deeper than {JSON_DEPTH_BOUND} levels"));
    match value {
        Value::Array(items) if !items.is_empty() => {
            if levels <= 1 {
                deeper()
            } else {
                Value::Array(items.iter().map(|v| cut(v, levels - 1)).collect())
            }
        }
        Value::Object(map) if !map.is_empty() => {
            if levels <= 1 {
                deeper()
            } else {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), cut(v, levels - 1))).collect())
            }
        }
        other => other.clone(),
    }
}

/// `value` cut to [`JSON_DEPTH_BOUND`] levels (the parts below replaced by
/// the string `"… nested deeper than 64 levels"`), or `None` when it is not
/// that deep (the common case: nothing is copied).
pub(crate) fn depth_bounded(value: &Value) -> Option<Value> {
    deeper_than(value, JSON_DEPTH_BOUND).then(|| cut(value, JSON_DEPTH_BOUND))
}

/// A stored JSON text as a value: parsed and cut to the depth bound, or, when
/// it does not parse, the string `"unreadable stored JSON (why)"`.
pub(crate) fn read_stored(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => depth_bounded(&value).unwrap_or(value),
        Err(e) => Value::String(format!("unreadable stored JSON ({e})")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_within_the_bound_are_kept_and_deeper_parts_become_a_marker() {
        let at_bound = (1..JSON_DEPTH_BOUND).fold(json!([]), |v, _| json!([v]));
        assert_eq!(depth_bounded(&at_bound), None);
        assert_eq!(depth_bounded(&json!({"a": [], "b": {}})), None);
        let cut = depth_bounded(&json!([at_bound])).expect("one level too deep");
        let mut inner = &cut;
        for _ in 1..JSON_DEPTH_BOUND {
            inner = &inner[0];
        }
        assert_eq!(inner, &json!(format!("… nested deeper than {JSON_DEPTH_BOUND} levels")));
    }

    #[test]
    fn a_text_that_does_not_parse_reads_as_a_marker() {
        assert_eq!(read_stored("[1, 2]"), json!([1, 2]));
        let marker = read_stored("not {json");
        assert!(marker.as_str().is_some_and(|s| s.starts_with("unreadable stored JSON (")), "{marker}");
    }
}
