//! Erasure-core benchmark: one line per kernel × (k,m) × op × size, in MB/s of file data (10^6 bytes of the
//! original data per second, one thread), with Python zfec's figure for the same case measured in the same run.
//!
//! `cargo bench --bench erasure`; `TAHOE_MOUNT_BENCH_QUICK=1` runs a short version (small "large" size, short
//! timings) that checks the harness works without being a measurement.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tahoe_mount::erasure::{Codec, Kernel};

const PARAMS: [(usize, usize); 4] = [(3, 10), (1, 10), (10, 14), (25, 50)];
const OPS: [&str; 2] = ["encode", "decode"];

struct Settings {
    quick: bool,
    sizes: Vec<(&'static str, usize)>,
    seconds: f64,
    runs: usize,
}

fn settings() -> Settings {
    let quick =
        std::env::var_os("TAHOE_MOUNT_BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0");
    if quick {
        Settings {
            quick,
            sizes: vec![("128KiB", 128 << 10), ("4MiB", 4 << 20)],
            seconds: 0.02,
            runs: 1,
        }
    } else {
        Settings {
            quick,
            sizes: vec![("128KiB", 128 << 10), ("64MiB", 64 << 20)],
            seconds: 0.4,
            runs: 5,
        }
    }
}

fn random_bytes(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Best rate over `runs` runs of at least `seconds` each, in MB/s of `data_bytes` per call.
fn measure(mut call: impl FnMut(), data_bytes: usize, seconds: f64, runs: usize) -> f64 {
    call(); // warm up: fault in the outputs, build the decode plan
    let mut best: f64 = 0.0;
    for _ in 0..runs {
        let start = Instant::now();
        let mut calls = 0u64;
        loop {
            call();
            calls += 1;
            if start.elapsed() >= Duration::from_secs_f64(seconds) {
                break;
            }
        }
        best = best.max(calls as f64 * data_bytes as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    best
}

/// Our rate for one case.
fn ours(kernel: Kernel, k: usize, m: usize, data_bytes: usize, op: &str, s: &Settings) -> f64 {
    let codec = Codec::with_kernel(k, m, kernel).expect("available kernel");
    let block = data_bytes / k;
    let mut seed = 0x243f_6a88_85a3_08d3;
    let data: Vec<Vec<u8>> = (0..k).map(|_| random_bytes(&mut seed, block)).collect();
    let inputs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let checks: Vec<u16> = (k as u16..m as u16).collect();
    let mut parity = vec![vec![0u8; block]; m - k];
    {
        let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        codec.encode(&inputs, &checks, &mut outs).expect("encode");
    }
    match op {
        "encode" => {
            let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
            measure(
                || codec.encode(&inputs, &checks, &mut outs).expect("encode"),
                block * k,
                s.seconds,
                s.runs,
            )
        }
        _ => {
            // Worst case: data shares 0..L lost, check shares k..k+L in their place.
            let lost = k.min(m - k);
            let numbers: Vec<u16> = (k..k + lost).chain(lost..k).map(|s| s as u16).collect();
            let given: Vec<&[u8]> = numbers
                .iter()
                .map(|&s| {
                    let s = usize::from(s);
                    if s < k {
                        data[s].as_slice()
                    } else {
                        parity[s - k].as_slice()
                    }
                })
                .collect();
            let mut decoded = vec![vec![0u8; block]; k];
            let mut outs: Vec<&mut [u8]> = decoded.iter_mut().map(Vec::as_mut_slice).collect();
            measure(
                || codec.decode(&numbers, &given, &mut outs).expect("decode"),
                block * k,
                s.seconds,
                s.runs,
            )
        }
    }
}

fn python() -> Option<PathBuf> {
    let path = std::env::var_os("TAHOE_MOUNT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    path.exists().then_some(path)
}

/// Python zfec's rates for every (k, m, size, op), or why there are none.
/// One Python zfec figure: (k, m, data bytes, op) and MB/s.
type PythonRate = ((usize, usize, usize, String), f64);

fn python_rates(s: &Settings) -> Result<Vec<PythonRate>, String> {
    let python = python().ok_or("no Python venv with zfec (run mount-tests/venv.sh)")?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/zfec_bench.py");
    let mut child = Command::new(&python)
        .arg(script)
        .args([
            "--seconds",
            &s.seconds.to_string(),
            "--runs",
            &s.runs.min(3).to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let mut request = String::new();
    for &(_, size) in &s.sizes {
        for (k, m) in PARAMS {
            for op in OPS {
                request.push_str(&format!("{k} {m} {} {op}\n", size / k * k));
            }
        }
    }
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "zfec_bench.py failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let parse = |i: usize| f.get(i).and_then(|v| v.parse::<usize>().ok());
            match (
                parse(0),
                parse(1),
                parse(2),
                f.get(3),
                f.get(4).and_then(|v| v.parse::<f64>().ok()),
            ) {
                (Some(k), Some(m), Some(size), Some(op), Some(rate)) => {
                    Ok(((k, m, size, op.to_string()), rate))
                }
                _ => Err(format!(
                    "zfec_bench.py printed an unexpected line: {line:?}"
                )),
            }
        })
        .collect()
}

fn cpu_description() -> (String, String) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    let interesting = [
        "sse2",
        "ssse3",
        "sse4_1",
        "sse4_2",
        "avx",
        "avx2",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512vbmi",
        "gfni",
        "vaes",
        "vpclmulqdq",
        "sha_ni",
        "asimd",
        "neon",
    ];
    let flags = field("flags");
    let flags = if flags == "unknown" {
        field("Features")
    } else {
        flags
    };
    let present: Vec<&str> = interesting
        .iter()
        .copied()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let absent: Vec<&str> = interesting
        .iter()
        .copied()
        .filter(|f| !flags.split_whitespace().any(|x| x == *f))
        .collect();
    (
        field("model name"),
        format!("{} (absent: {})", present.join(" "), absent.join(" ")),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; libtest-style filters are not supported.
    let s = settings();
    let (model, flags) = cpu_description();
    let kernels = Kernel::available();
    println!(
        "tahoe-mount erasure benchmark{}",
        if s.quick {
            " (QUICK mode: not a measurement)"
        } else {
            ""
        }
    );
    println!("cpu: {model}");
    println!("cpu flags: {flags}");
    println!(
        "kernels available: {}; default: {}",
        kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(" "),
        Kernel::best()
    );
    println!(
        "one thread; MB/s = 10^6 bytes of file data per second, best of {} runs of >= {} s; encode = the m-k check \
         shares; decode = worst case (data shares 0..min(k,m-k) lost), all k blocks written",
        s.runs, s.seconds
    );
    let python = python_rates(&s);
    if let Err(why) = &python {
        println!("python zfec: not measured: {why}");
    }
    println!();
    println!(
        "{:<7} {:<8} {:<7} {:<12} {:>10} {:>12} {:>9}",
        "size", "(k,m)", "op", "kernel", "MB/s", "py-zfec MB/s", "vs zfec"
    );
    for &(size_name, size) in &s.sizes {
        for (k, m) in PARAMS {
            for op in OPS {
                let data_bytes = size / k * k;
                let zfec = python.as_ref().ok().and_then(|rates| {
                    rates
                        .iter()
                        .find(|((rk, rm, rs, rop), _)| {
                            (*rk, *rm, *rs, rop.as_str()) == (k, m, data_bytes, op)
                        })
                        .map(|(_, r)| *r)
                });
                for &kernel in &kernels {
                    let rate = ours(kernel, k, m, data_bytes, op, &s);
                    let (zfec_text, ratio) = match zfec {
                        Some(z) => (format!("{z:.0}"), format!("{:.1}x", rate / z)),
                        None => ("-".into(), "-".into()),
                    };
                    println!(
                        "{:<7} {:<8} {:<7} {:<12} {:>10.0} {:>12} {:>9}",
                        size_name,
                        format!("({k},{m})"),
                        op,
                        kernel.name(),
                        rate,
                        zfec_text,
                        ratio
                    );
                }
            }
        }
    }
}
