//! Images through the product: `shoal image load|pull|ls|inspect|rm` against a real registry
//! (Debian's docker-registry) in the lab, and services that run images pulled from it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::images;
use support::registry::Registry;
use support::{shoal, Lab};

/// `shoal [--netns NS] image --state-dir STATE ARGS...`
fn image(ns: Option<&str>, state: &Path, args: &[&str]) -> Output {
    let mut full: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        full.extend(["--netns", ns]);
    }
    full.extend(["image", "--state-dir", state.to_str().unwrap()]);
    full.extend(args);
    shoal(&full)
}

fn ok(out: Output, what: &str) -> String {
    assert!(out.status.success(), "{what} failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = PathBuf::from(format!("/tmp/shoal-images-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
#[ignore = "needs root: run by tests/run.sh"]
fn load_pull_inspect_rm_and_a_tampered_layer_is_refused() {
    let lab = Lab::up(1);
    let reg = Registry::start(&lab, 5050);
    let tmp = Scratch::new("pull");
    let archive = tmp.0.join("busybox.tar");
    let id = images::busybox_image(&archive, "shoal/busybox:1");

    // docker load's format, straight from the file.
    let state = tmp.0.join("loaded");
    let out = ok(image(None, &state, &["load", "-i", archive.to_str().unwrap()]), "image load");
    assert_eq!(out.trim(), "Loaded image: shoal/busybox:1");
    let ls = ok(image(None, &state, &["ls"]), "image ls");
    assert!(ls.lines().any(|l| l.starts_with("shoal/busybox ") && l.contains(" 1 ") && l.contains(&id[7..19])), "{ls}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(image(None, &state, &["inspect", "shoal/busybox:1"]), "inspect")).unwrap();
    assert_eq!(inspect[0]["Id"], id);
    assert_eq!(inspect[0]["Config"]["WorkingDir"], "/app");
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 2);

    // An OCI image layout (skopeo writes one from the same archive), gzip-compressed.
    let oci = tmp.0.join("busybox-oci.tar");
    let sk = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(format!("oci-archive:{}:shoal/busybox:oci", oci.display()))
        .output()
        .unwrap();
    assert!(sk.status.success(), "skopeo to oci-archive: {}", String::from_utf8_lossy(&sk.stderr));
    let gz = std::process::Command::new("gzip").arg("-k").arg(&oci).status().unwrap();
    assert!(gz.success());
    let state_oci = tmp.0.join("oci");
    let out = ok(image(None, &state_oci, &["load", "-i", &format!("{}.gz", oci.display())]), "image load (OCI layout)");
    assert_eq!(out.trim(), "Loaded image: shoal/busybox:oci", "{out}");

    // Pull from the lab registry, from inside the node's namespace, over plain HTTP.
    let name = reg.push(&archive, "shoal/busybox:1");
    let node = lab.node_ns("smgr");
    let pulled = tmp.0.join("pulled");
    let insecure = reg.addr.clone();
    let refused = image(Some(&node), &pulled, &["pull", &name]);
    assert!(!refused.status.success(), "HTTPS is the default: a plain-HTTP registry needs insecure-registries");
    let out = ok(image(Some(&node), &pulled, &["pull", "--insecure-registry", &insecure, &name]), "image pull");
    assert!(out.contains("2 of 2 layers fetched"), "{out}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(image(None, &pulled, &["inspect", &name]), "inspect")).unwrap();
    assert_eq!(inspect[0]["Id"], id, "the same image, whichever way it came");
    assert!(inspect[0]["RepoDigests"][0].as_str().unwrap().starts_with(&format!("{}/shoal/busybox@sha256:", reg.addr)));
    // Again: every layer is in the store already.
    let out = ok(image(Some(&node), &pulled, &["pull", "--insecure-registry", &insecure, &name]), "image pull again");
    assert!(out.contains("0 of 2 layers fetched"), "{out}");

    // rm: the tag, then the image and its layers.
    let out = ok(image(None, &pulled, &["rm", &name]), "image rm");
    assert!(out.contains("Untagged") && out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(std::fs::read_dir(pulled.join("imagestore/layers")).unwrap().count(), 0, "no layer left behind");

    // A layer changed in the registry's storage: the pull refuses it and keeps nothing.
    let (layer, blob) = reg.smallest_layer_blob();
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let fresh = tmp.0.join("fresh");
    let out = image(Some(&node), &fresh, &["pull", "--insecure-registry", &insecure, &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refusing it") && err.contains(&layer), "{err}");
    let ls = ok(image(None, &fresh, &["ls", "-q"]), "image ls");
    assert!(ls.trim().is_empty(), "nothing recorded: {ls}");
    // The verified base layer may stay (as Docker keeps it); the tampered one never lands.
    let app_layer = inspect[0]["RootFS"]["Layers"][1].as_str().unwrap();
    assert!(!fresh.join("imagestore/layers").join(&app_layer[7..]).exists(), "the tampered layer is not in the store");
}
