//! What a packager takes from the binary: man pages generated from the same
//! definitions as `--help`, and `zixiao version` naming what is built in.

use std::path::Path;
use std::process::{Command, Output};

use zixiao_testing::output::text;

fn zixiao(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_zixiao"))
        .args(args)
        .env_remove("ZIXIAO_STATE_DIR")
        .output()
        .expect("run zixiao")
}

#[test]
fn man_writes_a_page_for_every_subcommand_titled_as_man_looks_it_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pages = dir.path().join("man1");
    let out = zixiao(&["man", "--dir", pages.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    let page = |name: &str| pages.join(format!("{name}.1"));
    for name in [
        "zixiao",
        "zixiao-instance-create",
        "zixiao-instance-snapshot-create",
        "zixiao-server",
    ] {
        let path = page(name);
        assert!(
            listed.contains(&path.display().to_string()),
            "{name}: {listed:?}"
        );
        let roff = read(&path);
        assert!(roff.contains(&format!(".TH {name} 1")), "{name}: {roff}");
    }
    let create = read(&page("zixiao-instance-create"));
    assert!(
        create.contains("zixiao instance create") && create.contains("publish"),
        "{create}"
    );
    assert!(
        !page("zixiao-help").exists(),
        "help is not a page of its own"
    );

    let single = zixiao(&["man"]);
    assert!(single.status.success());
    assert!(text(&single.stdout).contains(".TH zixiao 1"));
}

#[test]
fn man_into_a_path_that_is_a_file_is_refused_naming_the_option() {
    let file = tempfile::NamedTempFile::new().expect("file");
    let out = zixiao(&["man", "--dir", file.path().to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--dir"), "{}", text(&out.stderr));
}

#[test]
fn version_names_the_runtimes_and_stores_built_in() {
    let out = zixiao(&["version", "-o", "json"]);
    assert!(out.status.success());
    let version: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(version["version"], env!("CARGO_PKG_VERSION"));
    let features: Vec<&str> = version["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for (feature, built) in [
        ("containerd", cfg!(feature = "containerd")),
        ("libvirt", cfg!(feature = "libvirt")),
        ("microvm", cfg!(feature = "microvm")),
        ("etcd", cfg!(feature = "etcd")),
    ] {
        assert_eq!(
            features.contains(&feature),
            built,
            "{feature}: {features:?}"
        );
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
