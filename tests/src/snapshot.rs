//! Byte-for-byte pictures of a directory tree (contents and modes), to prove that a command
//! wrote nothing: take one before, one after, compare.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A tree: relative path → mode and, for files, contents.
pub type Tree = BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>;

/// Every file and directory under `root` (relative path → mode and, for files, contents).
pub fn tree(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Tree) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let e = e.expect("read directory entry");
        let path = e.path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let rel = path.strip_prefix(root).expect("under root").to_path_buf();
        let mode = meta.permissions().mode();
        if meta.is_dir() {
            out.insert(rel, (mode, None));
            walk(root, &path, out);
        } else {
            out.insert(rel, (mode, Some(std::fs::read(&path).expect("read file"))));
        }
    }
}

/// Panics naming each path that differs between `before` and `after`.
pub fn assert_same(what: &str, before: &Tree, after: &Tree) {
    let mut changed: Vec<String> = Vec::new();
    for (p, v) in before {
        match after.get(p) {
            None => changed.push(format!("removed {}", p.display())),
            Some(w) if w != v => changed.push(format!("changed {}", p.display())),
            Some(_) => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        changed.push(format!("added {}", p.display()));
    }
    assert!(changed.is_empty(), "{what}: {changed:?}");
}
