//! Compressed responses from a real Datasette with the `datasette-gzip` plugin (PyPI): the
//! snapshot is the decoded body the server meant, the manifest records the encoding and the
//! bytes on the wire, and `--no-compression` gets the same rows uncompressed.

use crate::common::*;

#[test]
fn gzip_bodies_are_decoded_into_snapshots_and_wire_bytes_recorded() {
    let db = fixture_db(1);
    let ds = Datasette::start_with_plugins(V0_65, &db, &["datasette-gzip"]);
    let dir = TempDir::new("gzip");
    let (zipped, plain) = (dir.path().join("gzip"), dir.path().join("plain"));
    let table = ["--table", "Orders"];
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        zipped.to_str().unwrap(),
        &table,
    );
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("on the wire"), "{}", stderr(&o));
    assert_dataset_matches_table(&zipped, &db, "Orders");
    let m = manifest(&zipped);
    let pages = records(&m, "page");
    assert!(!pages.is_empty());
    for p in &pages {
        assert_eq!(p["content_encoding"], "gzip", "{p}");
        let (wire, bytes) = (
            p["wire_bytes"].as_u64().unwrap(),
            p["bytes"].as_u64().unwrap(),
        );
        assert!(
            wire * 3 < bytes,
            "gzip should shrink JSON several times: {p}"
        );
        // The snapshot is the decoded JSON, byte-counted and hashed as such.
        let body = std::fs::read(zipped.join(p["path"].as_str().unwrap())).unwrap();
        assert_eq!(body.len() as u64, bytes);
        assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    }
    let totals = &records(&m, "run_end")[0]["totals"];
    assert!(
        totals["wire_bytes"].as_u64() < totals["bytes"].as_u64(),
        "{totals}"
    );
    assert_exit(
        &harvest(&["verify", "--out", zipped.to_str().unwrap()], &[]),
        0,
    );

    let mut args = table.to_vec();
    args.push("--no-compression");
    let o = run_job(
        "harvest",
        &ds.url,
        &ds.db_name,
        plain.to_str().unwrap(),
        &args,
    );
    assert_exit(&o, 0);
    assert_dataset_matches_table(&plain, &db, "Orders");
    let m = manifest(&plain);
    for p in records(&m, "page") {
        assert!(p.get("content_encoding").is_none() && p.get("wire_bytes").is_none());
    }
    let totals = &records(&m, "run_end")[0]["totals"];
    assert_eq!(totals["wire_bytes"], totals["bytes"]);
}
