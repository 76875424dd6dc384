//! `harvest config schema`: the JSON Schema is the committed harvest.schema.json (so editors
//! pointed at it by a `#:schema` header see what this binary accepts), every shipped config
//! validates against it under a real validator (python-jsonschema, Draft 7), and a key or a
//! type `harvest` refuses is refused by the schema too. taplo (the TOML engine of Even Better
//! TOML and other editors) follows the `#:schema` header the docs show.

use crate::common::*;

/// Validate each TOML file with python-jsonschema; print `ok FILE` or `FAIL FILE: path: message`.
const VALIDATE: &str = r#"
import json, sys, tomllib, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
validator = jsonschema.Draft7Validator(schema)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    errors = list(validator.iter_errors(doc))
    if not errors:
        print("ok", path)
    for e in errors:
        print("FAIL", path + ":", "/".join(map(str, e.absolute_path)) + ":", e.message)
"#;

fn validate(schema: &std::path::Path, files: &[std::path::PathBuf]) -> String {
    let mut cmd = python_c(&jsonschema_python(), VALIDATE);
    cmd.arg(schema).args(files);
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "validator failed: {}", stderr_of(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn generated_schema() -> String {
    let o = harvest(&["config", "schema"], &[]);
    assert_exit(&o, 0);
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_committed_schema_is_the_generated_one() {
    let generated = generated_schema();
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(
        doc["additionalProperties"], false,
        "unknown top-level keys must be refused"
    );
    for key in ["out", "jobs", "http", "parquet", "source", "extract"] {
        assert!(doc["properties"][key].is_object(), "no {key} in the schema");
    }
    let table = &doc["definitions"]["TableConfig"];
    assert_eq!(table["additionalProperties"], false);
    assert_eq!(table["required"], serde_json::json!(["name"]));
    assert!(table["properties"]["paginate"].is_object());
    let committed = std::fs::read_to_string(repo_root().join("harvest.schema.json")).unwrap();
    assert!(
        committed == generated,
        "harvest.schema.json is not what `harvest config schema` prints: regenerate it with \
         `cargo run -q -- config schema > harvest.schema.json`"
    );
}

#[test]
fn every_shipped_config_validates_and_a_typo_fails_both_the_schema_and_harvest() {
    let d = TempDir::new("schema");
    let schema = d.path().join("harvest.schema.json");
    std::fs::write(&schema, generated_schema()).unwrap();

    let mut shipped = vec![repo_root().join("harvest.example.toml")];
    for entry in std::fs::read_dir(repo_root().join("examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            shipped.push(p);
        }
    }
    assert!(shipped.len() >= 2, "{shipped:?}");
    let report = validate(&schema, &shipped);
    for file in &shipped {
        assert!(
            report.contains(&format!("ok {}", file.display())),
            "{} does not validate:\n{report}",
            file.display()
        );
    }
    assert!(!report.contains("FAIL"), "{report}");
    // The shipped configs carry a `#:schema` header; taplo finds the schema by it and agrees.
    let t = std::process::Command::new(taplo_bin())
        .current_dir(repo_root())
        .args(["check", "--no-auto-config"])
        .args(&shipped)
        .output()
        .unwrap();
    assert!(t.status.success(), "taplo: {}", stderr_of(&t));

    // The same mistakes, refused by the schema (naming them) and by harvest (exit 2, naming them).
    let cases = [
        (
            "typo",
            "[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\n[[source.table]]\nname = \"t\"\npage_sise = 10\n",
            "page_sise",
        ),
        (
            "top",
            "outt = \"x\"\n[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\n[[source.table]]\nname = \"t\"\n",
            "outt",
        ),
        (
            "paginator",
            "[[source]]\nkind = \"rest\"\nurl = \"http://127.0.0.1:9\"\n[[source.table]]\nname = \"t\"\npaginate = { kind = \"offset\", limit = 10, offest_param = \"o\" }\n",
            "offest_param",
        ),
        (
            "type",
            "[[source]]\nurl = \"http://127.0.0.1:9\"\ndatabase = \"d\"\n[[source.table]]\nname = \"t\"\npage_size = \"ten\"\n",
            "page_size",
        ),
    ];
    let mut files = Vec::new();
    for (name, text, _) in &cases {
        let p = d.path().join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    let report = validate(&schema, &files);
    let taplo = taplo_bin();
    for ((name, _, key), file) in cases.iter().zip(&files) {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("FAIL {}", file.display())))
            .unwrap_or_else(|| panic!("the schema accepted the {name} case:\n{report}"));
        assert!(line.contains(key), "{name}: {line}");
        // The editor's engine, told by the header the docs show, underlines the same mistake.
        let headed = d.path().join(format!("headed-{name}.toml"));
        let text = std::fs::read_to_string(file).unwrap();
        std::fs::write(&headed, format!("#:schema ./harvest.schema.json\n{text}")).unwrap();
        let t = std::process::Command::new(&taplo)
            .current_dir(d.path())
            .args(["check", "--no-auto-config"])
            .arg(&headed)
            .output()
            .unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&t.stdout), stderr_of(&t));
        assert!(
            !t.status.success(),
            "taplo accepted the {name} case: {said}"
        );
        assert!(
            said.contains("schema validation failed") && said.contains(key),
            "{name}: {said}"
        );

        let out = d.path().join(format!("out-{name}"));
        let o = harvest(
            &[
                "harvest",
                "-c",
                file.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
        );
        assert_exit(&o, 2);
        let key = key.trim_matches('"');
        assert!(stderr_of(&o).contains(key), "{name}: {}", stderr_of(&o));
        assert!(!out.exists(), "{name}: harvest wrote {}", out.display());
    }
}
