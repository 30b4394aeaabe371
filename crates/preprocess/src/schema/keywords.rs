//! The keywords of a schema object (known, annotations, or refused) and the
//! small readers the compiler uses for their values.

use serde_json::{Map, Value};

use super::compile::{err, SchemaError};
use super::node::NumberRule;

/// Ignored wherever they are.
pub(crate) const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$defs",
    "definitions",
    "readOnly",
    "writeOnly",
    "deprecated",
    "discriminator",
    "contentMediaType",
    "contentEncoding",
];

/// Keywords the compiler knows, beside the annotations.
const KNOWN: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "prefixItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "anyOf",
    "oneOf",
    "allOf",
    "$ref",
    "nullable",
];

pub(crate) fn check_keywords(map: &Map<String, Value>, path: &str) -> Result<(), SchemaError> {
    for k in map.keys() {
        let known = KNOWN.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str());
        if !known && !k.starts_with("x-") {
            return Err(err(
                &format!("{path}/{}", escape_pointer(k)),
                format!("keyword {k:?} is not supported"),
            ));
        }
    }
    Ok(())
}

/// A combinator (`$ref`, `anyOf`, ...) with constraining keywords beside it is
/// refused: they would have to hold at once.
pub(crate) fn only_beside(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<(), SchemaError> {
    match map
        .keys()
        .find(|k| *k != key && *k != "nullable" && !ANNOTATIONS.contains(&k.as_str()) && !k.starts_with("x-"))
    {
        Some(other) => Err(err(
            path,
            format!("{other:?} beside {key:?} is not supported (move it into the schemas it applies to)"),
        )),
        None => Ok(()),
    }
}

/// The type that type-specific keywords imply when `type` is left out.
pub(crate) fn implied_type(map: &Map<String, Value>) -> Option<&'static str> {
    let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
    if has(&[
        "properties",
        "required",
        "additionalProperties",
        "minProperties",
        "maxProperties",
    ]) {
        Some("object")
    } else if has(&[
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",
    ]) {
        Some("array")
    } else if has(&["minLength", "maxLength", "pattern"]) {
        Some("string")
    } else if has(&[
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    ]) {
        Some("number")
    } else {
        None
    }
}

/// Largest bound (in magnitude): integers up to it are exact as doubles.
const MAX_BOUND: f64 = 9_007_199_254_740_992.0;

pub(crate) fn number(
    integer: bool,
    map: &Map<String, Value>,
    path: &str,
) -> Result<NumberRule, SchemaError> {
    match map.get("multipleOf").and_then(Value::as_f64) {
        None => {}
        Some(m) if integer && m == 1.0 => {}
        Some(_) => {
            return Err(err(
                &format!("{path}/multipleOf"),
                "'multipleOf' cannot be enforced",
            ))
        }
    }
    let num = |k: &str| -> Result<Option<f64>, SchemaError> {
        match map.get(k) {
            None | Some(Value::Bool(_)) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| err(&format!("{path}/{k}"), "must be a number")),
        }
    };
    // Draft 4 wrote exclusive bounds as booleans beside minimum and maximum.
    let flag = |k: &str| map.get(k).and_then(Value::as_bool) == Some(true);
    let bound = |inclusive: Option<f64>,
                 exclusive: Option<f64>,
                 flag: bool,
                 tighter: fn(f64, f64) -> bool| {
        match (inclusive, exclusive) {
            (Some(i), Some(e)) if tighter(e, i) || e == i => Some((e, true)),
            (Some(i), _) => Some((i, flag)),
            (None, Some(e)) => Some((e, true)),
            (None, None) => None,
        }
    };
    let min = bound(
        num("minimum")?,
        num("exclusiveMinimum")?,
        flag("exclusiveMinimum"),
        |a, b| a > b,
    );
    let max = bound(
        num("maximum")?,
        num("exclusiveMaximum")?,
        flag("exclusiveMaximum"),
        |a, b| a < b,
    );
    if [min, max]
        .iter()
        .flatten()
        .any(|(b, _)| b.abs() > MAX_BOUND)
    {
        return Err(err(path, "bounds must be within ±2^53 (9007199254740992)"));
    }
    let rule = NumberRule { integer, min, max };
    if super::bounds::empty(&rule) {
        let what = if integer { "integer" } else { "number" };
        return Err(err(path, format!("no {what} is within the bounds")));
    }
    Ok(rule)
}

pub(crate) fn count(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<u32>, SchemaError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .map(|n| Some(n.min(u32::MAX as u64) as u32))
            .ok_or_else(|| err(&format!("{path}/{key}"), "must be a non-negative integer")),
    }
}

pub(crate) fn names<'v>(v: Option<&'v Value>, path: &str) -> Result<Vec<&'v str>, SchemaError> {
    match v {
        None => Ok(vec![]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|n| {
                n.as_str()
                    .ok_or_else(|| err(path, "must be a list of strings"))
            })
            .collect(),
        Some(_) => Err(err(path, "must be a list of strings")),
    }
}

/// A key as it appears in the document: JSON-escaped, without the quotes.
pub(crate) fn raw_key(k: &str) -> Box<[u8]> {
    let quoted = serde_json::to_vec(k).unwrap_or_default();
    quoted[1..quoted.len().saturating_sub(1).max(1)].into()
}

/// Follows a JSON pointer (`/$defs/Name`, empty for the whole document).
pub(crate) fn resolve<'v>(doc: &'v Value, pointer: &str) -> Option<&'v Value> {
    let decoded = pointer.replace("%25", "%");
    doc.pointer(&decoded)
}

pub(crate) fn escape_pointer(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// RFC 3339 full-date: days per month, 29 February in leap years only, years
/// 0001 to 9999 (as most date types take them).
const DATE: &str = concat!(
    r"(([1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])-",
    r"((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))",
    r"|([0-9]{2}(0[48]|[2468][048]|[13579][26])|([2468][048]|[13579][26]|0[48])00)-02-29)",
);
/// RFC 3339 full-time, without leap seconds (which most time types refuse).
const TIME: &str =
    r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";

/// Regular expressions for the formats that are enforced (RFC 3339 dates and
/// times, RFC 4122 UUIDs, a plain e-mail address, dotted IPv4).
pub(crate) fn format_pattern(format: &str) -> Option<String> {
    Some(match format {
        "date" => DATE.to_string(),
        "time" => TIME.to_string(),
        "date-time" => format!("(?:{DATE})[Tt](?:{TIME})"),
        "uuid" => r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}".into(),
        "email" => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+".into(),
        "ipv4" => {
            r"((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])".into()
        }
        _ => return None,
    })
}
