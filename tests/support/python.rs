//! The Python interpreter of the test virtualenv (the real Lambda runtime client, EMF libraries,
//! botocore, rotel): `LOUPE_TEST_PYTHON`, or `.venv/bin/python` under the manifest directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn python() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = std::env::var_os("LOUPE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join(".venv/bin/python"));
    let p = if p.is_relative() { manifest.join(p) } else { p };
    assert!(
        p.exists(),
        "no Python at {}: run bash scripts/setup.sh (or set LOUPE_TEST_PYTHON)",
        p.display()
    );
    p
}
