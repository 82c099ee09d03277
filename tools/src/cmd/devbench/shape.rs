//! The I/O shapes devbench measures: the engine's own (DESIGN.md, "How it is
//! measured"), each with the fio job in fio-configs/ that runs the same shape.

/// What the requests of a shape do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Writes at consecutive offsets, wrapping at the end of the region.
    SeqWrite,
    /// Writes at uniformly random block-aligned offsets.
    RandWrite,
    /// Reads at uniformly random block-aligned offsets.
    RandRead,
    /// Each request independently a random read with this chance, else a random write.
    RandMixed { read_percent: u32 },
}

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Also the fio job's name and its file name (without `.fio`).
    pub name: &'static str,
    pub pattern: Pattern,
    pub block_bytes: usize,
    /// Requests kept in flight at all times.
    pub queue_depth: usize,
    /// The fio job file's text, built into the binary so devbench needs no checkout.
    pub fio_job: &'static str,
}

impl Shape {
    /// Reads dominate the shape: its latency column shows reads, else writes.
    pub fn reads_dominate(&self) -> bool {
        matches!(
            self.pattern,
            Pattern::RandRead | Pattern::RandMixed { read_percent: 50.. }
        )
    }
}

/// The largest request of any shape; the region must be a multiple of it.
pub const BLOCK_BYTES_MAX: usize = 1 << 20;
/// The deepest queue of any shape (sizes the registered buffer arena).
pub const QUEUE_DEPTH_MAX: usize = 32;

/// In the order they run: the writes first, so the reads that follow find the region
/// written (and each shape sees the device in the state the previous left it).
pub const SHAPES: [Shape; 6] = [
    Shape {
        name: "seq_write_1m_qd32",
        pattern: Pattern::SeqWrite,
        block_bytes: 1 << 20,
        queue_depth: 32,
        fio_job: include_str!("../../../../fio-configs/seq_write_1m_qd32.fio"),
    },
    Shape {
        name: "seq_write_128k_qd32",
        pattern: Pattern::SeqWrite,
        block_bytes: 128 << 10,
        queue_depth: 32,
        fio_job: include_str!("../../../../fio-configs/seq_write_128k_qd32.fio"),
    },
    Shape {
        name: "rand_write_64k_qd32",
        pattern: Pattern::RandWrite,
        block_bytes: 64 << 10,
        queue_depth: 32,
        fio_job: include_str!("../../../../fio-configs/rand_write_64k_qd32.fio"),
    },
    Shape {
        name: "rand_read_4k_qd1",
        pattern: Pattern::RandRead,
        block_bytes: 4 << 10,
        queue_depth: 1,
        fio_job: include_str!("../../../../fio-configs/rand_read_4k_qd1.fio"),
    },
    Shape {
        name: "rand_read_4k_qd32",
        pattern: Pattern::RandRead,
        block_bytes: 4 << 10,
        queue_depth: 32,
        fio_job: include_str!("../../../../fio-configs/rand_read_4k_qd32.fio"),
    },
    Shape {
        name: "mixed_4k_qd32",
        pattern: Pattern::RandMixed { read_percent: 70 },
        block_bytes: 4 << 10,
        queue_depth: 32,
        fio_job: include_str!("../../../../fio-configs/mixed_4k_qd32.fio"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `key=` in the job's own section (after its `[name]` header).
    fn job_option<'a>(job: &'a str, name: &str, key: &str) -> Option<&'a str> {
        let section = job.split(&format!("[{name}]")).nth(1)?;
        section
            .lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
    }

    fn parse_size(text: &str) -> usize {
        let (digits, unit) = text.split_at(
            text.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len()),
        );
        let n: usize = digits.parse().unwrap();
        n * match unit {
            "" => 1,
            "k" => 1 << 10,
            "m" => 1 << 20,
            other => panic!("unit {other}"),
        }
    }

    /// The fio jobs must run exactly the shapes we run, or the ratio means nothing.
    #[test]
    fn fio_jobs_match_the_shapes() {
        for shape in SHAPES {
            let job = shape.fio_job;
            let opt = |key| {
                job_option(job, shape.name, key)
                    .unwrap_or_else(|| panic!("{}: no {key}", shape.name))
            };
            assert_eq!(parse_size(opt("bs")), shape.block_bytes, "{}", shape.name);
            assert_eq!(
                opt("iodepth").parse::<usize>().unwrap(),
                shape.queue_depth,
                "{}",
                shape.name
            );
            let (rw, mix) = match shape.pattern {
                Pattern::SeqWrite => ("write", None),
                Pattern::RandWrite => ("randwrite", None),
                Pattern::RandRead => ("randread", None),
                Pattern::RandMixed { read_percent } => ("randrw", Some(read_percent)),
            };
            assert_eq!(opt("rw"), rw, "{}", shape.name);
            if let Some(read_percent) = mix {
                assert_eq!(opt("rwmixread").parse::<u32>().unwrap(), read_percent);
            }
            for common in [
                "ioengine=io_uring",
                "direct=1",
                "time_based=1",
                "filename=${FILENAME}",
                "size=${SIZE}",
                "runtime=${RUNTIME}",
            ] {
                assert!(
                    job.lines().any(|l| l.trim() == common),
                    "{}: missing {common}",
                    shape.name
                );
            }
            assert!(
                shape.block_bytes <= BLOCK_BYTES_MAX
                    && BLOCK_BYTES_MAX.is_multiple_of(shape.block_bytes)
            );
            assert!(shape.queue_depth <= QUEUE_DEPTH_MAX);
        }
    }
}
