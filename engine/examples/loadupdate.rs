//! A quick load-then-update run on a file device, for profiling the engine without the
//! CLI: `cargo run --release -p hashkv --example loadupdate -- DIR MIB`.

use hashkv::{Db, Options};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(args.get(1).expect("usage: loadupdate DIR [MIB]"));
    let mib: u64 = args.get(2).map_or(256, |s| s.parse().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let dev = dir.join("values.img");
    let _ = std::fs::remove_file(&dev);
    let meta = dir.join("meta");
    let _ = std::fs::remove_dir_all(&meta);
    let value_bytes = 1024usize;
    let n = mib * 1024 * 1024 / value_bytes as u64;
    // Room for the data plus 30% reserve and a margin.
    let device_bytes = ((mib * 1024 * 1024) as f64 * 2.2) as u64 / (64 << 20) * (64 << 20);
    let o = Options::default().with_create_device_bytes(Some(device_bytes));
    let db = Db::format(&[dev.clone()], &meta, &o).unwrap();
    let value = vec![7u8; value_bytes];
    let t = Instant::now();
    for i in 0..n {
        db.put(format!("user{:020}", i).as_bytes(), &value).unwrap();
    }
    db.flush().unwrap();
    let s = t.elapsed().as_secs_f64();
    println!("load: {n} puts in {s:.2}s = {:.0} ops/s", n as f64 / s);
    let st = db.stats();
    println!("{st:?}");
    let t = Instant::now();
    let mut x: u64 = 1;
    for _ in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (x >> 33) % (n / 10).max(1);
        db.put(format!("user{:020}", i).as_bytes(), &value).unwrap();
    }
    db.flush().unwrap();
    let s = t.elapsed().as_secs_f64();
    println!("update: {n} puts in {s:.2}s = {:.0} ops/s", n as f64 / s);
    println!("{:?}", db.stats());
    db.close().unwrap();
}
