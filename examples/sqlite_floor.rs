//! The benchmark floor for `sql-extract`: step every row of a query and read every value
//! (folding them into a checksum so nothing is optimized away), writing nothing.
//! Usage: sqlite_floor DB SQL [NAME=VALUE …] (values bind as text, `int:N` as integers).

use rusqlite::types::ValueRef;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut argv = std::env::args().skip(1);
    let (Some(db), Some(sql)) = (argv.next(), argv.next()) else {
        eprintln!("usage: sqlite_floor DB SQL [NAME=VALUE ...]");
        std::process::exit(2);
    };
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare(&sql)?;
    for kv in argv {
        let (k, v) = kv.split_once('=').ok_or("parameters are NAME=VALUE")?;
        let idx = stmt
            .parameter_index(&format!(":{k}"))?
            .ok_or("unknown parameter")?;
        match v.strip_prefix("int:") {
            Some(n) => stmt.raw_bind_parameter(idx, n.parse::<i64>()?)?,
            None => stmt.raw_bind_parameter(idx, v)?,
        }
    }
    let n = stmt.column_count();
    let mut rows = stmt.raw_query();
    let (mut count, mut sum) = (0u64, 0u64);
    while let Some(r) = rows.next()? {
        count += 1;
        for i in 0..n {
            sum = sum.wrapping_add(match r.get_ref(i)? {
                ValueRef::Null => 1,
                ValueRef::Integer(x) => x as u64,
                ValueRef::Real(f) => f.to_bits(),
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    t.len() as u64 + t.first().copied().unwrap_or(0) as u64
                }
            });
        }
    }
    println!("{count} rows, checksum {sum}");
    Ok(())
}
