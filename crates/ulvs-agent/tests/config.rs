//! Configuration files: the shipped example validates; bad files give precise, located errors
//! (syntax errors, unknown fields, invalid addresses, duplicate services); variables, locals and
//! interpolation work in HCL and JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ulvs_agent::config::{CheckKind, Diagnostic, Syntax, load_file, parse_str};

fn errors(text: &str) -> Vec<String> {
    errors_in(text, Syntax::Hcl)
}

fn errors_in(text: &str, syntax: Syntax) -> Vec<String> {
    match parse_str("f.hcl", text, syntax, &BTreeMap::new()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(d) => d.iter().map(Diagnostic::to_string).collect(),
    }
}

#[test]
fn the_example_config_validates() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/agent/example.hcl");
    let cfg = load_file(&path, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.agent.name, "edge-1");
    assert_eq!(cfg.services.len(), 3);
    assert_eq!(cfg.services[0].spec.key.address.to_string(), "198.18.100.1");
    assert_eq!(cfg.services[0].real_servers[0].spec.port, 8080);
    assert!(cfg.services[0].sorry_server.is_some());
    // Tunnel real servers take the service's port.
    assert_eq!(cfg.services[2].real_servers[0].spec.port, 443);
    assert_eq!(cfg.services[2].spec.persistence_prefix_len, 24);
}

#[test]
fn syntax_errors_are_located() {
    let e = errors("service \"a\" {\n  address = \"198.18.100.1\"\n  port = 80 +\n}\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("f.hcl:3:14: error: syntax error"), "{e:?}");
}

#[test]
fn unknown_fields_are_located() {
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100.1\"\n  port = 80\n  wieght = 3\n  real_server {\n    address = \"198.18.1.1\"\n    bogus {\n    }\n  }\n}\n",
    );
    assert_eq!(
        e,
        [
            "f.hcl:4:3: error: unknown attribute \"wieght\" in service \"a\"",
            "f.hcl:7:5: error: unknown block \"bogus\" in a real_server block",
        ]
    );
}

#[test]
fn invalid_addresses_are_located() {
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100\"\n  port = 80\n}\nservice \"b\" {\n  address = \"198.18.100.2\"\n  port = 80\n  real_server {\n    address = \"fd00:1b5::zz\"\n  }\n}\n",
    );
    assert_eq!(
        e,
        [
            "f.hcl:2:13: error: address: invalid IP address \"198.18.100\"",
            "f.hcl:9:15: error: address: invalid IP address \"fd00:1b5::zz\"",
        ]
    );
}

#[test]
fn duplicate_services_and_real_servers_are_located() {
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100.1\"\n  port = 80\n}\nservice \"b\" {\n  address = \"198.18.100.1\"\n  port = 80\n}\n",
    );
    assert_eq!(
        e,
        ["f.hcl:5:1: error: duplicate service tcp 198.18.100.1:80 (already defined on line 1)"]
    );
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100.1\"\n  port = 80\n}\nservice \"a\" {\n  address = \"198.18.100.2\"\n  port = 80\n}\n",
    );
    assert_eq!(
        e,
        ["f.hcl:5:1: error: duplicate service name \"a\" (first defined on line 1)"]
    );
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100.1\"\n  port = 80\n  forward = \"masq\"\n  real_server {\n    address = \"198.18.1.1\"\n    port = 80\n  }\n  real_server {\n    address = \"198.18.1.1\"\n  }\n}\n",
    );
    assert_eq!(
        e,
        [
            "f.hcl:9:3: error: duplicate real server 198.18.1.1:80 in service \"a\" (already defined on line 5)"
        ]
    );
}

#[test]
fn semantic_errors_name_the_value() {
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100.1\"\n  port = 70000\n  scheduler = \"fastest\"\n  one_packet = true\n  health_check {\n    type = \"https\"\n    ca_file = \"/nonexistent/ca.pem\"\n  }\n}\n",
    );
    assert_eq!(e.len(), 4, "{e:?}");
    assert!(
        e[0].starts_with("f.hcl:3:10: error: port: 70000 is out of range"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("f.hcl:4:15: error: scheduler: unknown scheduler \"fastest\""),
        "{e:?}"
    );
    assert!(
        e[2].starts_with("f.hcl:5:16: error: one_packet: only for UDP"),
        "{e:?}"
    );
    assert!(
        e[3].starts_with("f.hcl:8:15: error: ca_file: /nonexistent/ca.pem: cannot read it"),
        "{e:?}"
    );
}

#[test]
fn https_check_settings_are_checked() {
    let check = |attrs: &str| {
        format!(
            "service \"a\" {{\n  address = \"198.18.100.1\"\n  port = 443\n  health_check {{\n    type = \"https\"\n{attrs}\n  }}\n  real_server {{\n    address = \"198.18.1.1\"\n  }}\n}}\n"
        )
    };
    let e = errors(&check("    server_name = \"not a name\""));
    assert_eq!(
        e,
        ["f.hcl:6:19: error: server_name: \"not a name\" is neither a DNS name nor an IP address"]
    );
    let e = errors(&check(
        "    insecure_skip_verify = true\n    ca_file = \"ca.pem\"",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("f.hcl:4:3: error: ca_file and insecure_skip_verify exclude each other"),
        "{e:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = errors(&check(&format!(
        "    ca_file = {:?}",
        empty.display().to_string()
    )));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("holds no certificate"), "{e:?}");
    // http checks take no TLS settings.
    let e = errors(
        "service \"a\" {\n  address = \"198.18.100.1\"\n  port = 80\n  health_check {\n    type = \"http\"\n    insecure_skip_verify = true\n  }\n}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("insecure_skip_verify"), "{e:?}");
    // A valid one decodes, with the server name and no CA file (the system bundle).
    let cfg = parse_str(
        "f.hcl",
        &check("    server_name = \"www.example\"\n    path = \"/ready\"\n    expect_status = 204"),
        Syntax::Hcl,
        &BTreeMap::new(),
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    let hc = cfg.services[0].real_servers[0]
        .health_check
        .clone()
        .unwrap();
    let CheckKind::Https {
        path,
        expect_status,
        host,
        tls,
    } = hc.kind
    else {
        panic!("{hc:?}");
    };
    assert_eq!((path.as_str(), expect_status, host), ("/ready", 204, None));
    assert_eq!(tls.server_name.as_deref(), Some("www.example"));
    assert!(tls.ca_certs.is_empty() && tls.ca_file.is_none() && !tls.insecure_skip_verify);
}

#[test]
fn undefined_variables_are_located() {
    let e = errors("service \"a\" {\n  address = var.nope\n  port = 80\n}\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("f.hcl:2:13: error: address:"), "{e:?}");
}

#[test]
fn variables_locals_and_interpolation() {
    let text = r#"
variable "net" {
  default = "198.18.1"
}
locals {
  second = "${local.first}2"
  first  = "${var.net}.1"
}
service "a" {
  address = "${var.net}.100"
  port    = 80
  forward = "masq"
  real_server {
    address = local.second
    port    = 8000 + 80
  }
}
"#;
    let mut vars = BTreeMap::new();
    let cfg = parse_str("v.hcl", text, Syntax::Hcl, &vars).unwrap();
    assert_eq!(cfg.services[0].spec.key.address.to_string(), "198.18.1.100");
    assert_eq!(
        cfg.services[0].real_servers[0].spec.address.to_string(),
        "198.18.1.12"
    );
    assert_eq!(cfg.services[0].real_servers[0].spec.port, 8080);
    vars.insert("net".to_owned(), "198.18.2".to_owned());
    let cfg = parse_str("v.hcl", text, Syntax::Hcl, &vars).unwrap();
    assert_eq!(cfg.services[0].spec.key.address.to_string(), "198.18.2.100");
}

#[test]
fn json_is_accepted_and_its_errors_located() {
    let text = r#"{
  "variable": { "vip": { "default": "198.18.100.1" } },
  "service": {
    "web": {
      "address": "${var.vip}",
      "port": 80,
      "forward": "masq",
      "health_check": { "type": "tcp", "interval": "200ms", "timeout": "100ms" },
      "real_server": [
        { "address": "198.18.1.11", "port": 8080 },
        { "address": "198.18.1.12", "port": 8080, "weight": 3 }
      ]
    }
  }
}"#;
    let cfg = parse_str("f.json", text, Syntax::Json, &BTreeMap::new()).unwrap();
    assert_eq!(cfg.services[0].real_servers.len(), 2);
    assert_eq!(cfg.services[0].real_servers[1].spec.weight, 3);
    assert!(cfg.services[0].real_servers[0].health_check.is_some());

    let bad = text.replace("198.18.1.12\"", "198.18.1.x\"");
    let e = errors_in(&bad, Syntax::Json);
    assert_eq!(
        e,
        ["f.hcl:11:22: error: address: invalid IP address \"198.18.1.x\""]
    );
    let e = errors_in("{\n  \"service\": {,}\n}", Syntax::Json);
    assert!(
        e[0].starts_with("f.hcl:2:15: error: JSON syntax error"),
        "{e:?}"
    );
}
