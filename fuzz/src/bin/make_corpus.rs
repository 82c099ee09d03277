//! Writes the seed corpus (`hashkv_fuzz::seeds`) to fuzz/corpus/TARGET/NAME,
//! replacing the seeds there; other files (inputs added by hand) are left alone.
//! Run it after a format change: `cargo run -p hashkv-fuzz --bin make-corpus`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = hashkv_fuzz::seeds::all();
    for s in &seeds {
        let dir = root.join(s.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(s.name), &s.bytes)?;
    }
    println!("wrote {} seeds under {}", seeds.len(), root.display());
    Ok(())
}
