//! The state file the parent writes before each cycle and the child starts from: the
//! cycle, the id of its first operation, and what every key holds (as the parent
//! verified it after the previous cycle). Text, so it can be read when a run fails:
//!
//! ```text
//! hashkv crashtest state 1
//! cycle 3
//! first_op 81234
//! keys 2048
//! 17 80011        (key index, version: one line per key that holds a value)
//! end
//! ```
//! Written to a temporary name and renamed, so the child never reads half of one.

use super::verify::KeyStates;
use std::fmt::Write as _;
use std::path::Path;

const HEADER: &str = "hashkv crashtest state 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleStart {
    pub cycle: u32,
    pub first_op: u64,
    pub keys: KeyStates,
}

impl CycleStart {
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = format!(
            "{HEADER}\ncycle {}\nfirst_op {}\nkeys {}\n",
            self.cycle,
            self.first_op,
            self.keys.len()
        );
        for (k, v) in self.keys.iter().enumerate() {
            if let Some(v) = v {
                let _ = writeln!(text, "{k} {v}");
            }
        }
        text.push_str("end\n");
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    pub fn read(path: &Path) -> Result<CycleStart, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|why| format!("{}: {why}", path.display()))
    }

    fn parse(text: &str) -> Result<CycleStart, String> {
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Err(format!("does not start with {HEADER:?}"));
        }
        let mut field = |name: &str| -> Result<u64, String> {
            let line = lines.next().unwrap_or_default();
            line.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{line:?}, expected \"{name} N\""))
        };
        let cycle = u32::try_from(field("cycle")?).map_err(|e| format!("cycle: {e}"))?;
        let first_op = field("first_op")?;
        let key_count = usize::try_from(field("keys")?).map_err(|e| format!("keys: {e}"))?;
        let mut keys = vec![None; key_count];
        for line in lines.by_ref() {
            if line == "end" {
                return Ok(CycleStart {
                    cycle,
                    first_op,
                    keys,
                });
            }
            let (k, v) = line
                .split_once(' ')
                .and_then(|(k, v)| Some((k.parse::<usize>().ok()?, v.parse::<u64>().ok()?)))
                .ok_or_else(|| format!("{line:?}, expected \"KEY VERSION\""))?;
            *keys
                .get_mut(k)
                .ok_or_else(|| format!("key {k} beyond the {key_count} keys"))? = Some(v);
        }
        Err("no \"end\" line: the file is cut short".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_a_cut_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let start = CycleStart {
            cycle: 4,
            first_op: 99,
            keys: vec![None, Some(3), None, Some(98)],
        };
        start.write(&path).unwrap();
        assert_eq!(CycleStart::read(&path).unwrap(), start);
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = &text[..text.len() - 4];
        assert!(CycleStart::parse(cut).unwrap_err().contains("cut short"));
        assert!(CycleStart::parse(&text.replace("3 98", "9 98")).is_err());
    }
}
