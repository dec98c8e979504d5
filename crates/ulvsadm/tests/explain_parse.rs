//! `--explain`'s command line and its rendering.

use std::net::IpAddr;

use ulvs_proto::v1 as pb;
use ulvsadm::names::{NameTables, StaticNames};
use ulvsadm::parse::{Command, ExplainOptions, OutputFormat, parse_args};

fn parse(line: &str) -> Result<Command, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    parse_args(&words, &StaticNames(NameTables::parse("", "")))
        .map(|i| i.command)
        .map_err(|e| e.to_string())
}

#[test]
fn explain_takes_a_service_and_a_client() {
    let Command::Explain(o) =
        parse("--explain -t 198.18.100.1:80 --client 198.18.0.2:40000").unwrap()
    else {
        panic!("not explain")
    };
    assert_eq!(o.service.to_string(), "TCP 198.18.100.1:80");
    assert_eq!(o.client_addr, "198.18.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(o.client_port, 40000);
    assert_eq!(o.output, OutputFormat::Text);
    let Command::Explain(o) =
        parse("--explain -u 198.18.100.1:53 --client=198.18.0.2:5 -o json").unwrap()
    else {
        panic!("not explain")
    };
    assert_eq!(o.output, OutputFormat::Json);
}

#[test]
fn explain_refuses_what_it_cannot_answer() {
    for (line, want) in [
        ("--explain --client 198.18.0.2:1", "service-address"),
        ("--explain -t 198.18.100.1:80", "client"),
        (
            "--explain -t 198.18.100.1:80 --client 198.18.0.2",
            "client address:port",
        ),
        (
            "--explain -t 198.18.100.1:80 --client [fd00:1b5::1]:1",
            "client address:port",
        ),
        (
            "--explain -t 198.18.100.1:80 --client 198.18.0.2:1 -s rr",
            "scheduler",
        ),
        ("-L --client 198.18.0.2:1", "client"),
    ] {
        let e = parse(line).unwrap_err();
        assert!(e.contains(want), "{line}: {e}");
    }
}

#[test]
fn renders_the_outcome_and_every_reason() {
    let Command::Explain(opts) =
        parse("--explain -t 198.18.100.1:80 --client 198.18.0.2:40000").unwrap()
    else {
        panic!("not explain")
    };
    let resp = pb::ExplainResponse {
        outcome: pb::explain_response::Outcome::Persistence as i32,
        real_server_address: "198.18.1.11".into(),
        real_server_port: 8080,
        scheduler: "rr".into(),
        reasons: vec![
            "service TCP 198.18.100.1:80 scheduler rr".into(),
            "persistence: x".into(),
        ],
    };
    assert_eq!(
        ulvsadm::explain::render(&opts, &resp),
        "TCP 198.18.100.1:80 client 198.18.0.2:40000 -> 198.18.1.11:8080 (persistence template, rr)\n  service TCP 198.18.100.1:80 scheduler rr\n  persistence: x\n"
    );
    let json = ulvsadm::explain::render(
        &ExplainOptions {
            output: OutputFormat::Json,
            ..opts
        },
        &pb::ExplainResponse {
            outcome: pb::explain_response::Outcome::NoDestination as i32,
            scheduler: "sh".into(),
            ..Default::default()
        },
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["outcome"], "no_destination");
    assert!(v["real_server"].is_null());
}
