//! `alejandra [--check] PATH...`: format Nix files in place, or with `--check` report the
//! files that are not formatted (exit 2) without touching them. Directories are walked for
//! `*.nix`. A parse error exits 1. Mirrors the upstream CLI's exit codes for these flags.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let p = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') || name == "target" {
                continue;
            }
            if p.is_dir() || p.extension().is_some_and(|e| e == "nix") {
                collect(&p, out)?;
            }
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut check = false;
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" | "-c" => check = true,
            "--version" => {
                println!("alejandra (library) 3.1.0");
                return ExitCode::SUCCESS;
            }
            _ => paths.push(PathBuf::from(arg)),
        }
    }
    if paths.is_empty() {
        paths.push(PathBuf::from("."));
    }
    let mut files = Vec::new();
    for p in &paths {
        if let Err(e) = collect(p, &mut files) {
            eprintln!("alejandra: {}: {e}", p.display());
            return ExitCode::from(1);
        }
    }
    let (mut changed, mut failed) = (0, 0);
    for f in &files {
        let name = f.display().to_string();
        let before = match std::fs::read_to_string(f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("alejandra: {name}: {e}");
                failed += 1;
                continue;
            }
        };
        match alejandra::format::in_memory(name.clone(), before) {
            (alejandra::format::Status::Error(e), _) => {
                eprintln!("alejandra: {name}: parse error: {e}");
                failed += 1;
            }
            (alejandra::format::Status::Changed(true), after) => {
                changed += 1;
                if check {
                    eprintln!("alejandra: {name}: not formatted");
                } else if let Err(e) = std::fs::write(f, after) {
                    eprintln!("alejandra: {name}: {e}");
                    failed += 1;
                }
            }
            (alejandra::format::Status::Changed(false), _) => {}
        }
    }
    eprintln!(
        "alejandra: {} file(s), {changed} {}, {failed} error(s)",
        files.len(),
        if check { "not formatted" } else { "reformatted" }
    );
    if failed > 0 {
        ExitCode::from(1)
    } else if check && changed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
