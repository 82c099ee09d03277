//! `hashkv get`, `put`, `delete` and `scan`: one store operation per invocation, for
//! scripting and inspection. Keys and values are bytes: keys come as text, as hex
//! (`--key-hex`) or from a file (`--key-file`); `get` writes the value's bytes as they
//! are; `scan` prints lines that say every byte unambiguously (escaped text, or hex).
//!
//! Opening needs the format-time parameters (mode, segment sizes); `Db::open_formatted`
//! reads them from the devices' superblock, so the user names only the devices and
//! the metadata directory.

use super::explain::{check_distinct_devices, explain, Doing};
use super::store::{io_error, StoreCmdError, StoreResult};
use hashkv::{Db, Options};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Where a store lives.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// Device or file of the store (repeat for every member of a stripe, in order).
    #[arg(long = "device", value_name = "PATH", required = true)]
    pub devices: Vec<PathBuf>,

    /// Metadata (LSM tree) directory of the store.
    #[arg(long, value_name = "DIR")]
    pub metadata: PathBuf,
}

impl StoreArgs {
    /// Opens the store with the parameters its superblock names (waiting briefly for
    /// a lock whose holder has just died).
    pub fn open(&self) -> StoreResult<Db> {
        check_distinct_devices(&self.devices)?;
        Db::open_formatted(&self.devices, &self.metadata, &Options::default())
            .map_err(|e| self.explain(e, Doing::Open))
    }

    pub fn explain(&self, e: hashkv::Error, doing: Doing) -> StoreCmdError {
        explain(e, doing, &self.devices, &self.metadata)
    }
}

/// Where a key comes from: the KEY argument (text), `--key-hex` or `--key-file`.
#[derive(Debug, clap::Args)]
pub struct KeySource {
    /// The key as hex digits (any bytes), instead of KEY.
    #[arg(long, value_name = "HEX", conflicts_with = "key_file")]
    pub key_hex: Option<String>,
    /// Read the key's bytes from this file ("-" for standard input), instead of KEY.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

impl KeySource {
    fn given(&self) -> bool {
        self.key_hex.is_some() || self.key_file.is_some()
    }

    /// The key's bytes: from the flags, or else from `text`.
    fn bytes(&self, text: Option<&str>) -> StoreResult<Vec<u8>> {
        match (&self.key_hex, &self.key_file, text) {
            (Some(hex), _, _) => parse_hex("--key-hex", hex),
            (None, Some(path), _) => read_input(path, "reading the key file"),
            (None, None, Some(text)) => Ok(text.as_bytes().to_vec()),
            (None, None, None) => Err(StoreCmdError::Arguments(
                "the key is missing: give KEY, --key-hex HEX or --key-file FILE".into(),
            )),
        }
    }
}

/// Bytes from a file, or from standard input for "-".
fn read_input(path: &Path, action: &'static str) -> StoreResult<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(io_error(path, "reading standard input"))?;
        Ok(buf)
    } else {
        std::fs::read(path).map_err(io_error(path, action))
    }
}

/// Decodes hex digits (either case); `flag` names the argument in the error.
pub fn parse_hex(flag: &str, hex: &str) -> StoreResult<Vec<u8>> {
    let bad = |why: &str| StoreCmdError::Arguments(format!("{flag} {hex:?}: {why}"));
    if !hex.len().is_multiple_of(2) {
        return Err(bad("an odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| bad("not hex digits"))
        })
        .collect()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bytes as text that says every byte: valid UTF-8 as it is, except backslash, tab,
/// newline, carriage return and other control characters, which are escaped (`\\`,
/// `\t`, `\n`, `\r`, `\xNN` per byte), as is every byte that is not valid UTF-8.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                let (ok, after) = rest.split_at(e.valid_up_to());
                let bad_len = e.error_len().unwrap_or(after.len());
                rest = &after[bad_len..];
                // Checked above: everything before valid_up_to is UTF-8.
                (
                    std::str::from_utf8(ok).unwrap_or_default(),
                    &after[..bad_len],
                )
            }
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut utf8 = [0u8; 4];
                    for b in c.encode_utf8(&mut utf8).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in bad {
            let _ = write!(out, "\\x{b:02x}");
        }
        if bad.is_empty() {
            return out;
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The key (UTF-8 text); or use --key-hex or --key-file.
    #[arg(required_unless_present_any = ["key_hex", "key_file"], conflicts_with_all = ["key_hex", "key_file"])]
    pub key: Option<String>,
    #[command(flatten)]
    pub key_source: KeySource,
    /// Print the value as hex digits and a newline, instead of its bytes.
    #[arg(long, conflicts_with = "output")]
    pub hex: bool,
    /// Write the value's bytes to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Writes the value's bytes exactly (no newline added); a missing key is an error
/// (exit status 1), so scripts can tell it from an empty value.
pub fn get(args: &GetArgs) -> StoreResult<()> {
    let key = args.key_source.bytes(args.key.as_deref())?;
    let db = args.store.open()?;
    let value = db.get(&key);
    db.close()?;
    let Some(value) = value? else {
        return Err(StoreCmdError::KeyNotFound { key: escape(&key) });
    };
    match &args.output {
        Some(path) => std::fs::write(path, &value).map_err(io_error(path, "writing the value")),
        None => {
            let mut out = std::io::stdout().lock();
            let written = if args.hex {
                writeln!(out, "{}", to_hex(&value))
            } else {
                out.write_all(&value)
            };
            written
                .and_then(|()| out.flush())
                .map_err(io_error(Path::new("standard output"), "writing the value"))
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// KEY then VALUE, as UTF-8 text. Without KEY when --key-hex or --key-file gives
    /// the key; without VALUE when --value-hex or --value-file gives the value.
    #[arg(value_names = ["KEY", "VALUE"], num_args = 0..=2)]
    pub words: Vec<String>,
    #[command(flatten)]
    pub key_source: KeySource,
    /// The value as hex digits (any bytes).
    #[arg(long, value_name = "HEX", conflicts_with = "value_file")]
    pub value_hex: Option<String>,
    /// Read the value's bytes from this file ("-" for standard input).
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
}

impl PutArgs {
    /// The key and value, from the words and flags given.
    fn key_value(&self) -> StoreResult<(Vec<u8>, Vec<u8>)> {
        let mut words = self.words.iter().map(String::as_str);
        let key_word = if self.key_source.given() {
            None
        } else {
            words.next()
        };
        let key = self.key_source.bytes(key_word)?;
        let value_word = words.next();
        let value = match (value_word, &self.value_hex, &self.value_file) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(StoreCmdError::Arguments(
                    "the value is given twice: as VALUE and with --value-hex or --value-file"
                        .into(),
                ))
            }
            (Some(text), None, None) => text.as_bytes().to_vec(),
            (None, Some(hex), _) => parse_hex("--value-hex", hex)?,
            (None, None, Some(path)) => read_input(path, "reading the value file")?,
            (None, None, None) => {
                return Err(StoreCmdError::Arguments(
                    "the <VALUE> is missing: give it after the key, or with --value-hex or \
                     --value-file"
                        .into(),
                ))
            }
        };
        if self.key_source.key_file.as_deref() == Some(Path::new("-"))
            && self.value_file.as_deref() == Some(Path::new("-"))
        {
            return Err(StoreCmdError::Arguments(
                "--key-file - and --value-file - cannot both read standard input".into(),
            ));
        }
        Ok((key, value))
    }
}

/// Writes the value durably (a sync write) before returning.
pub fn put(args: &PutArgs) -> StoreResult<()> {
    let (key, value) = args.key_value()?;
    let db = args.store.open()?;
    db.put_sync(&key, &value)
        .map_err(|e| not_durable("put", e))?;
    db.close()?;
    Ok(())
}

/// A sync write's error: a device or index failure says that the write is not
/// durable; a refusal (too large, store full) is reported as it is.
fn not_durable(what: &'static str, e: hashkv::Error) -> StoreCmdError {
    if e.is_fatal() {
        StoreCmdError::NotDurable { what, source: e }
    } else {
        e.into()
    }
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The key (UTF-8 text); or use --key-hex or --key-file.
    #[arg(required_unless_present_any = ["key_hex", "key_file"], conflicts_with_all = ["key_hex", "key_file"])]
    pub key: Option<String>,
    #[command(flatten)]
    pub key_source: KeySource,
}

/// Deletes durably; deleting a missing key is not an error (as in the engine).
pub fn delete(args: &DeleteArgs) -> StoreResult<()> {
    let key = args.key_source.bytes(args.key.as_deref())?;
    let db = args.store.open()?;
    db.delete_sync(&key).map_err(|e| not_durable("delete", e))?;
    db.close()?;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Print keys and values as hex digits instead of escaped text.
    #[arg(long)]
    pub hex: bool,
    /// First key (inclusive), as text. [default: the smallest]
    #[arg(long, value_name = "KEY", conflicts_with = "from_hex")]
    pub from: Option<String>,
    /// First key (inclusive), as hex digits.
    #[arg(long, value_name = "HEX")]
    pub from_hex: Option<String>,
    /// End key (exclusive), as text. [default: past the largest]
    #[arg(long, value_name = "KEY", conflicts_with = "to_hex")]
    pub to: Option<String>,
    /// End key (exclusive), as hex digits.
    #[arg(long, value_name = "HEX")]
    pub to_hex: Option<String>,
    /// At most this many pairs.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

fn bound_key(
    text: &Option<String>,
    hex: &Option<String>,
    flag: &str,
) -> StoreResult<Option<Vec<u8>>> {
    match (text, hex) {
        (Some(t), _) => Ok(Some(t.as_bytes().to_vec())),
        (None, Some(h)) => parse_hex(flag, h).map(Some),
        (None, None) => Ok(None),
    }
}

/// Prints `key<TAB>value` lines in key order: escaped text (see `escape`), or hex with
/// --hex; either says every byte, so the output can be turned back into the pairs.
pub fn scan(args: &ScanArgs) -> StoreResult<()> {
    let from = bound_key(&args.from, &args.from_hex, "--from-hex")?;
    let to = bound_key(&args.to, &args.to_hex, "--to-hex")?;
    let db = args.store.open()?;
    let lower = from.as_deref().map_or(Bound::Unbounded, Bound::Included);
    let upper = to.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let show = |b: &[u8]| if args.hex { to_hex(b) } else { escape(b) };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = (|| -> StoreResult<()> {
        for item in db
            .scan(lower, upper)?
            .take(args.limit.unwrap_or(usize::MAX))
        {
            let (k, v) = item?;
            writeln!(out, "{}\t{}", show(&k), show(&v))
                .map_err(io_error(Path::new("standard output"), "writing the scan"))?;
        }
        out.flush()
            .map_err(io_error(Path::new("standard output"), "writing the scan"))
    })();
    drop(out);
    db.close()?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of `escape`, to show that it loses nothing.
    fn unescape(s: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                continue;
            }
            match chars.next().unwrap() {
                '\\' => out.push(b'\\'),
                't' => out.push(b'\t'),
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(u8::from_str_radix(&hex, 16).unwrap());
                }
                other => panic!("unknown escape \\{other}"),
            }
        }
        out
    }

    #[test]
    fn escaped_text_says_every_byte_and_keeps_plain_text() {
        assert_eq!(escape(b"apple pie"), "apple pie");
        assert_eq!(escape("café ✓".as_bytes()), "café ✓");
        assert_eq!(
            escape(b"a\tb\nc\\d\r\x00\x7f"),
            "a\\tb\\nc\\\\d\\r\\x00\\x7f"
        );
        assert_eq!(escape(b"\xff\xfeok\xc3"), "\\xff\\xfeok\\xc3");
        let mut state = 7u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            let text = escape(&bytes);
            assert!(!text.contains('\t') && !text.contains('\n'), "{text:?}");
            assert_eq!(unescape(&text), bytes);
        }
    }

    #[test]
    fn hex_round_trips_and_bad_hex_names_the_flag() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(parse_hex("--key-hex", &to_hex(&bytes)).unwrap(), bytes);
        assert_eq!(parse_hex("--key-hex", "00FFaB").unwrap(), vec![0, 255, 171]);
        for bad in ["abc", "zz", "é1"] {
            let e = parse_hex("--key-hex", bad).unwrap_err().to_string();
            assert!(e.contains("--key-hex"), "{e}");
        }
    }
}
