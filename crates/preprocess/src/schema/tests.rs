//! The recognizer against documents that a schema accepts or refuses, and
//! against serde_json; prefixes that are refused are refused at the first byte
//! that goes wrong.

use serde_json::{json, Value};

use super::*;

fn accepts(schema: &Schema, doc: &str) -> bool {
    let mut s = SchemaState::new();
    s.feed_all(schema, doc.as_bytes()) && s.complete(schema)
}

fn compile(v: Value) -> Schema {
    Schema::compile(&v).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn json_mode_takes_any_object() {
    let any = Schema::any_object();
    for doc in [
        "{}",
        r#"{"a":1}"#,
        r#"{ "finding" : "right lower lobe consolidation", "severity": 2.5e-3,
            "follow_up": [true, false, null, -0.5, 10, {"x": []}], "é ✓ 😀": "\u00e9\"\\\/" }"#,
        r#"{"n": [[[[]]]], "z": 0, "neg": -12.75E+2, "pair": "\ud83d\ude00"}"#,
    ] {
        assert!(accepts(&any, doc), "{doc}");
        assert!(serde_json::from_str::<Value>(doc).is_ok(), "{doc}");
    }
    for doc in [
        "[]",
        "1",
        r#""s""#,
        r#"{"a" 1}"#,
        r#"{"a":01}"#,
        r#"{"a":1,}"#,
        r#"{"a":[1,]}"#,
        r#"{a:1}"#,
        r#"{"a":tru}"#,
        "{\"a\":\"line\nbreak\"}",
        r#"{"a":"\x"}"#,
        r#"{"a":"\u12G4"}"#,
        r#"{"a":"\ud83d"}"#,
        r#"{"a":"\ude00"}"#,
        r#"{"a":1.}"#,
        r#"{"a":-}"#,
        r#"{"a":1e}"#,
        r#"{} {}"#,
        "{}\n",
        " {}",
    ] {
        assert!(!accepts(&any, doc), "{doc:?}");
    }
    let mut s = SchemaState::new();
    assert!(s.feed_all(&any, br#"{"a": [1, 2"#) && !s.complete(&any));
    let mut s = SchemaState::new();
    assert!(
        !s.feed_all(&any, &[b'{', b'"', 0xC3, b'"']),
        "invalid UTF-8"
    );
}

#[test]
fn whitespace_and_nesting_are_bounded() {
    let any = Schema::any_object();
    let indent = " ".repeat(MAX_INDENT as usize);
    for ok in [
        "{ \"a\": 1 }",
        "{\n  \"a\": [\n\t\t1,\n\t\t2\n  ]\n}",
        &format!("{{\n{indent}\"a\":1}}"),
    ] {
        assert!(accepts(&any, ok), "{ok:?}");
    }
    for bad in [
        "{  \"a\": 1}",
        "{\t\"a\": 1}",
        "{\n\n\"a\": 1}",
        "{ \n\"a\": 1}",
        "{\r\n\"a\": 1}",
        &format!("{{\n{indent} \"a\":1}}"),
    ] {
        assert!(!accepts(&any, bad), "{bad:?}");
    }
    let deep = "[".repeat(MAX_DEPTH - 1);
    let mut s = SchemaState::new();
    assert!(s.feed_all(&any, format!("{{\"a\":{deep}").as_bytes()));
    assert!(!s.feed(&any, b'['));
}

/// A report as a clinical tool would ask for it (pydantic's shape: `$defs`,
/// `anyOf` with null, enums, `additionalProperties: false`).
fn report() -> Schema {
    compile(json!({
        "$defs": {
            "Finding": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "minLength": 1, "maxLength": 12},
                    "severity": {"enum": ["mild", "moderate", "severe"]},
                    "size_mm": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 500}, {"type": "null"}]}
                },
                "required": ["location", "severity", "size_mm"],
                "additionalProperties": false
            }
        },
        "type": "object",
        "properties": {
            "findings": {"type": "array", "items": {"$ref": "#/$defs/Finding"}, "maxItems": 3},
            "urgent": {"type": "boolean"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "exam_date": {"type": "string", "format": "date"},
            "note": {"type": "string", "pattern": "^[A-Z]"}
        },
        "required": ["findings", "urgent"],
        "additionalProperties": false
    }))
}

#[test]
fn a_report_schema_is_enforced() {
    let s = report();
    for doc in [
        r#"{"findings":[],"urgent":false}"#,
        r#"{"urgent": true, "findings": [{"location": "RLL", "severity": "mild", "size_mm": 12.5}]}"#,
        r#"{"findings":[{"severity":"severe","size_mm":null,"location":"apex"}],"urgent":true,"age":0,"exam_date":"2026-11-29","note":"Stable"}"#,
        r#"{"findings":[],"urgent":false,"age":120,"note":"Ok, Ünicode"}"#,
    ] {
        assert!(accepts(&s, doc), "{doc}");
    }
    for (doc, why) in [
        (r#"{"findings":[]}"#, "urgent is required"),
        (
            r#"{"findings":[],"urgent":false,"extra":1}"#,
            "no other keys",
        ),
        (
            r#"{"findings":[],"urgent":false,"urgent":true}"#,
            "no repeated key",
        ),
        (r#"{"findings":[],"urgent":"yes"}"#, "boolean"),
        (
            r#"{"findings":[],"urgent":false,"age":121}"#,
            "age above the maximum",
        ),
        (
            r#"{"findings":[],"urgent":false,"age":-1}"#,
            "age below the minimum",
        ),
        (
            r#"{"findings":[],"urgent":false,"age":1.5}"#,
            "age is an integer",
        ),
        (
            r#"{"findings":[],"urgent":false,"exam_date":"2026-13-01"}"#,
            "a date",
        ),
        (
            r#"{"findings":[],"urgent":false,"note":"lower"}"#,
            "the pattern",
        ),
        (
            r#"{"findings":[{"location":"","severity":"mild","size_mm":1}],"urgent":false}"#,
            "minLength",
        ),
        (
            r#"{"findings":[{"location":"abcdefghijklm","severity":"mild","size_mm":1}],"urgent":false}"#,
            "maxLength",
        ),
        (
            r#"{"findings":[{"location":"a","severity":"grave","size_mm":1}],"urgent":false}"#,
            "the enum",
        ),
        (
            r#"{"findings":[{"location":"a","severity":"mild"}],"urgent":false}"#,
            "size_mm is required",
        ),
        (
            r#"{"findings":[{"location":"a","severity":"mild","size_mm":501}],"urgent":false}"#,
            "size bound",
        ),
        (
            r#"{"findings":[{"location":"a","severity":"mild","size_mm":1e2}],"urgent":false}"#,
            "no exponent with bounds",
        ),
    ] {
        assert!(!accepts(&s, doc), "{why}: {doc}");
        assert!(serde_json::from_str::<Value>(doc).is_ok(), "{doc}");
    }
    let four = r#"{"location":"a","severity":"mild","size_mm":1}"#;
    let doc = format!(r#"{{"urgent":true,"findings":[{four},{four},{four},{four}]}}"#);
    assert!(!accepts(&s, &doc), "maxItems");
}

#[test]
fn refused_prefixes_stop_at_the_first_wrong_byte() {
    let s = report();
    for (prefix, bad) in [
        (r#"{"urgent": "#, b'1'),
        (r#"{"age": 1"#, b'.'),
        (r#"{"age": 12"#, b'1'),
        (r#"{"age": -"#, b'1'),
        (r#"{"urgent": true, "#, b'}'),
        (r#"{"u"#, b'x'),
        (r#"{"findings": [{"severity": "m"#, b'x'),
        (r#"{"note": ""#, b'a'),
    ] {
        let mut st = SchemaState::new();
        assert!(st.feed_all(&s, prefix.as_bytes()), "{prefix}");
        assert!(!st.feed(&s, bad), "{prefix} then {:?}", bad as char);
    }
}

#[test]
fn unions_references_and_literals() {
    // Recursive: a tree of nodes.
    let tree = compile(json!({
        "$ref": "#/$defs/Node",
        "$defs": {"Node": {"type": "object", "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}
        }, "required": ["name"], "additionalProperties": false}}
    }));
    assert!(accepts(
        &tree,
        r#"{"name":"a","children":[{"name":"b","children":[{"name":"c"}]}]}"#
    ));
    assert!(!accepts(
        &tree,
        r#"{"name":"a","children":[{"children":[]}]}"#
    ));
    // A union decided late: both branches start alike.
    let union = compile(json!({"anyOf": [
        {"type": "object", "properties": {"kind": {"const": "xray"}, "view": {"enum": ["PA", "AP"]}},
         "required": ["kind", "view"], "additionalProperties": false},
        {"type": "object", "properties": {"kind": {"const": "ct"}, "slices": {"type": "integer"}},
         "required": ["kind", "slices"], "additionalProperties": false},
    ]}));
    assert!(accepts(&union, r#"{"kind":"xray","view":"PA"}"#));
    assert!(accepts(&union, r#"{"kind":"ct","slices":120}"#));
    assert!(!accepts(&union, r#"{"kind":"ct","view":"PA"}"#));
    // Numbers as literals: 1 and 12 share a prefix.
    let nums = compile(
        json!({"type": "object", "properties": {"n": {"enum": [1, 12, "x", [1, 2], {"a": null}]}}}),
    );
    for ok in [
        r#"{"n":1}"#,
        r#"{"n":12}"#,
        r#"{"n":"x"}"#,
        r#"{"n":[1,2]}"#,
        r#"{"n":{"a":null}}"#,
    ] {
        assert!(accepts(&nums, ok), "{ok}");
    }
    assert!(!accepts(&nums, r#"{"n":123}"#) && !accepts(&nums, r#"{"n":2}"#));
    // Scalars and arrays at the root; tuples.
    let root_num = compile(json!({"type": "integer", "minimum": 10}));
    assert!(accepts(&root_num, "15") && !accepts(&root_num, "9"));
    let mut st = SchemaState::new();
    assert!(st.feed_all(&root_num, b"1") && !st.complete(&root_num));
    let tuple = compile(
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}),
    );
    assert!(accepts(&tuple, r#"["a",1]"#) && accepts(&tuple, r#"["a"]"#));
    assert!(!accepts(&tuple, r#"["a",1,2]"#) && !accepts(&tuple, r#"[1]"#));
    // Additional properties by schema, beside listed ones.
    let extra = compile(
        json!({"type": "object", "properties": {"a": {"type": "integer"}},
        "additionalProperties": {"type": "string"}}),
    );
    assert!(accepts(&extra, r#"{"a":1,"ab":"x"}"#) && accepts(&extra, r#"{"b":"y"}"#));
    assert!(!accepts(&extra, r#"{"a":"x"}"#) && !accepts(&extra, r#"{"b":1}"#));
    assert!(!accepts(&extra, r#"{"a":1,"a":2}"#));
    // maxProperties leaves room for the required keys.
    let room = compile(
        json!({"type": "object", "properties": {"a": {}, "b": {}, "c": {}},
        "required": ["c"], "maxProperties": 2, "additionalProperties": false}),
    );
    assert!(accepts(&room, r#"{"a":1,"c":2}"#) && accepts(&room, r#"{"c":2,"b":1}"#));
    let mut st = SchemaState::new();
    assert!(st.feed_all(&room, br#"{"a":1,""#) && !st.feed(&room, b'b'));
}

#[test]
fn what_cannot_be_enforced_is_refused_by_path() {
    for (schema, path) in [
        (
            json!({"type": "object", "patternProperties": {"^a": {}}}),
            "#/patternProperties",
        ),
        (
            json!({"type": "array", "uniqueItems": true}),
            "#/uniqueItems",
        ),
        (json!({"type": "number", "multipleOf": 0.5}), "#/multipleOf"),
        (
            json!({"properties": {"x": {"multipleOf": 3}}}),
            "#/properties/x/multipleOf",
        ),
        (json!({"uniqueItems": true}), "#/uniqueItems"),
        (
            json!({"properties": {"x": {"type": "string", "pattern": "(?<=a)b"}}}),
            "#/properties/x/pattern",
        ),
        (json!({"$ref": "#/$defs/Missing"}), "#/$ref"),
        (json!({"$ref": "https://example.com/s.json"}), "#/$ref"),
        (
            json!({"allOf": [{"type": "string"}, {"minLength": 2}]}),
            "#",
        ),
        (json!({"type": "strin"}), "#/type"),
        (
            json!({"properties": {"a": {}}, "required": ["b"]}),
            "#/required",
        ),
        (json!({"anyOf": [{"type": "string"}], "minLength": 3}), "#"),
        (
            json!({"type": "object", "additionalProperties": true, "maxProperties": 2}),
            "#",
        ),
        (
            json!({"type": "object", "properties": {"a": {}, "b": {}}, "required": ["a", "b"], "maxProperties": 1}),
            "#",
        ),
        (
            json!({"type": "object", "properties": {"a": {}}, "minProperties": 2}),
            "#",
        ),
        (
            json!({"type": "integer", "minimum": 0.5, "maximum": 0.7}),
            "#",
        ),
        (
            json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0}),
            "#",
        ),
        (json!({"type": "integer", "minimum": 1e17}), "#"),
        (
            json!({"type": "string", "minLength": 3, "maxLength": 2}),
            "#",
        ),
        (json!({"$ref": "#"}), "#"),
        (
            json!({"type": "object", "properties": {"a": false}, "required": ["a"]}),
            "#/properties/a",
        ),
    ] {
        let e = Schema::compile(&schema).expect_err(&schema.to_string());
        assert_eq!(e.path, path, "{schema}: {e}");
    }
    // An object without `properties` takes any key; with them, only those.
    let open = compile(json!({"type": "object"}));
    assert!(accepts(&open, r#"{"a": [1, {"b": null}]}"#));
    let closed = compile(json!({"type": "object", "properties": {}}));
    assert!(accepts(&closed, "{}") && !accepts(&closed, r#"{"a": 1}"#));
    // Annotations and extensions are fine; unknown formats are annotations.
    compile(
        json!({"title": "T", "description": "d", "x-internal": 1, "type": "string", "format": "uri", "default": "a"}),
    );
}

#[test]
fn random_documents_agree_with_serde_json_in_json_mode() {
    // Every prefix of a valid document is accepted; a byte flipped anywhere is
    // refused at or after that byte exactly when serde_json refuses the whole.
    let any = Schema::any_object();
    let doc = r#"{"a": [1, -2.5e+3, "x\ty\u0041", {"b": null}], "c": {"d": [true, false]}}"#;
    let mut x = 0x2545F4914F6CDD1Du64;
    for _ in 0..2000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut bytes = doc.as_bytes().to_vec();
        let at = (x % bytes.len() as u64) as usize;
        // No whitespace: two blanks in a row are JSON but beyond the whitespace rule.
        let pool = b"{}[]\",:0123456789.eE+-tfnul\\ax";
        bytes[at] = pool[((x >> 20) % pool.len() as u64) as usize];
        let ours = {
            let mut s = SchemaState::new();
            s.feed_all(&any, &bytes) && s.complete(&any)
        };
        let theirs = serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.is_object());
        assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn every_position_in_a_free_string_is_one_state() {
    // Masks are kept per state: a free string or an unlisted key must not
    // count its bytes, or every token would need a new mask.
    let any = Schema::any_object();
    let at = |doc: &str| {
        let mut s = SchemaState::new();
        assert!(s.feed_all(&any, doc.as_bytes()), "{doc}");
        s
    };
    assert_eq!(at(r#"{"a": "x"#), at(r#"{"a": "xyz é"#));
    assert_eq!(at(r#"{"k"#), at(r#"{"key"#));
    let short = compile(json!({"type": "string", "maxLength": 3}));
    let mut a = SchemaState::new();
    let mut b = SchemaState::new();
    assert!(a.feed_all(&short, b"\"x") && b.feed_all(&short, b"\"xy"));
    assert_ne!(a, b, "a length rule counts");
}

#[test]
fn dates_are_calendar_dates() {
    let date = compile(json!({"type": "string", "format": "date"}));
    for ok in [
        "2024-02-29",
        "2000-02-29",
        "2026-11-30",
        "0001-01-01",
        "2026-12-31",
    ] {
        assert!(accepts(&date, &format!("\"{ok}\"")), "{ok}");
    }
    for bad in [
        "2023-02-29",
        "1900-02-29",
        "2026-11-31",
        "0000-01-01",
        "2026-02-30",
        "2026-13-01",
    ] {
        assert!(!accepts(&date, &format!("\"{bad}\"")), "{bad}");
    }
    let stamp = compile(json!({"type": "string", "format": "date-time"}));
    assert!(accepts(&stamp, "\"2026-11-29T13:05:00.5+01:00\""));
    assert!(
        !accepts(&stamp, "\"2026-11-29T23:59:60Z\"") && !accepts(&stamp, "\"2026-11-29T13:05:00\"")
    );
}
