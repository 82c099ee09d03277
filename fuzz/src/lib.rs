//! Fuzz targets for every decoder of what hashkv reads back from its devices and its
//! index (`hashkv::decoders`, `hashkv_blockdev::identity`, `hashkv_lsm::decoders`).
//!
//! Each target is a function of the input bytes (`targets`), run three ways:
//! - by afl-fuzz, one binary per target in src/bin/ (feature `afl`; fuzz/run.sh);
//! - by `cargo test -p hashkv-fuzz` over the checked-in corpus (corpus/TARGET/) and
//!   the inputs of crashes found so far (regressions/TARGET/), so CI checks both
//!   without AFL++;
//! - by `make-corpus`, which writes the seed corpus from the real encoders (`seeds`).

pub mod seeds;
pub mod targets;

/// A fuzz target: its name (binary, corpus directory) and the function it runs.
/// The function returns whether the input, as it is, decoded as a valid structure;
/// it panics on any bug it finds (a decoder panic or a broken round trip).
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]) -> bool,
}

/// Every target, in the order fuzz/run.sh runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "superblock",
        run: targets::superblock,
    },
    Target {
        name: "member_identity",
        run: targets::member_identity,
    },
    Target {
        name: "value_record",
        run: targets::value_record,
    },
    Target {
        name: "cold_tag",
        run: targets::cold_tag,
    },
    Target {
        name: "group_entry",
        run: targets::group_entry,
    },
    Target {
        name: "cold_segment",
        run: targets::cold_segment,
    },
    Target {
        name: "value_log",
        run: targets::value_log,
    },
    Target {
        name: "index_entry",
        run: targets::index_entry,
    },
    Target {
        name: "wal_record",
        run: targets::wal_record,
    },
    Target {
        name: "table_block",
        run: targets::table_block,
    },
    Target {
        name: "table_footer",
        run: targets::table_footer,
    },
    Target {
        name: "filter",
        run: targets::filter,
    },
    Target {
        name: "manifest",
        run: targets::manifest,
    },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
