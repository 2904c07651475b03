//! deploy/ must not rot: the gateway.yaml inside every ConfigMap is a valid
//! config, and the README shows exactly the ingress snippets the real-peer
//! tests run.

use std::collections::BTreeMap;
use std::path::Path;

#[derive(serde::Deserialize)]
struct ConfigMap {
    kind: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[test]
fn configmaps_hold_valid_gateway_configs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut checked = 0;
    for dir in ["sidecar", "forward-auth"] {
        let path = root.join(dir).join("configmap.yaml");
        let text = std::fs::read_to_string(&path).expect("read ConfigMap");
        let map: ConfigMap =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(map.kind, "ConfigMap");
        let config = map.data.get("gateway.yaml").expect("a gateway.yaml key");
        let name = path.with_file_name(format!("{dir}-gateway.yaml"));
        scopegate::config::parse(&name, config.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn the_readme_shows_the_tested_ingress_snippets() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    for (peer, snippet) in [
        ("nginx", crate::peers::nginx_snippet(8081, 3000)),
        ("caddy", crate::peers::caddy_snippet(8081, 3000)),
    ] {
        assert!(
            readme.contains(&snippet),
            "README must show the {peer} snippet the tests run:\n{snippet}"
        );
    }
}
