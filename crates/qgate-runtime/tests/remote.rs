//! The KServe V2 client against a real V2 server (MLServer serving the ONNX fixtures through
//! tests/servers/onnx_runtime.py). `.ci/run` starts it and sets `QGATE_V2_URL`; without it
//! these tests say so and pass, unless `QGATE_REQUIRE_V2=1`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use qgate_core::Tolerance;
use qgate_data::{load_npz, ArrayKeys, Dataset};
use qgate_runtime::{load, LoadOptions, ModelSpec, RuntimeError};

#[path = "../../../tests/reference/ort_refs.rs"]
mod ort_refs;

fn server() -> Option<String> {
    match std::env::var("QGATE_V2_URL") {
        Ok(u) if !u.is_empty() => Some(u.trim_end_matches('/').to_string()),
        _ if std::env::var("QGATE_REQUIRE_V2").is_ok_and(|v| v == "1") => {
            panic!("QGATE_REQUIRE_V2=1 but QGATE_V2_URL is not set (start tests/servers/start.sh)")
        }
        _ => {
            eprintln!("skipping V2 server tests: QGATE_V2_URL is not set");
            None
        }
    }
}

#[path = "../../../tests/reference/fixtures.rs"]
mod fixtures_dir;
use fixtures_dir::fixtures;

fn npz(file: &str) -> Dataset {
    load_npz(&fixtures().join(file), &ArrayKeys::default()).unwrap()
}

fn load_remote(
    url: &str,
    timeout: Option<Duration>,
) -> Result<Box<dyn qgate_runtime::Model>, RuntimeError> {
    let opts = LoadOptions {
        timeout,
        ..LoadOptions::default()
    };
    load(&ModelSpec::parse(url).unwrap(), &opts)
}

#[test]
fn served_outputs_equal_onnxruntime() {
    let Some(base) = server() else { return };
    let data = npz("test.npz");
    let served = [
        ("mlp_fp32", "x"),
        ("mlp_int8_dynamic", "x"),
        ("cnn_int8_qdq", "image"),
    ];
    // The server runs onnxruntime on this machine; so does the reference (fused INT8
    // kernels differ between CPUs).
    let models: Vec<&str> = served.iter().map(|(m, _)| *m).collect();
    let Some(refs) = ort_refs::fixture_outputs(&models) else {
        return;
    };
    for (model, input) in served {
        let mut m = load_remote(&format!("{base}/v2/models/{model}"), None).unwrap();
        assert_eq!(m.provenance().runtime, "kserve-v2");
        assert!(
            m.provenance().runtime_version.contains("mlserver"),
            "{:?}",
            m.provenance()
        );
        assert_eq!(m.info().inputs[0].name, input);
        let outs = m.run(&[data.arrays[input].clone()]).unwrap();
        for (info, got) in m.info().outputs.clone().iter().zip(outs) {
            let want = &refs.arrays[&format!("{model}__{}", info.name)];
            assert_eq!(got.shape, want.shape);
            for (g, w) in got.to_f64().unwrap().iter().zip(want.to_f64().unwrap()) {
                // JSON carries float32 values exactly (shortest round-trip form both ways).
                assert!(
                    Tolerance::Exact.close(*g, w),
                    "{model}/{}: {g} vs {w}",
                    info.name
                );
            }
        }
    }
}

#[test]
fn server_errors_are_reported_with_status_and_message() {
    let Some(base) = server() else { return };
    let x = npz("test.npz").arrays["x"].slice_rows(0, 2);
    let mut broken = load_remote(&format!("{base}/v2/models/broken_json"), None).unwrap();
    let err = broken
        .run(std::slice::from_ref(&x))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("HTTP 500") && err.contains("configured to fail"),
        "{err}"
    );
    let mut plain = load_remote(&format!("{base}/v2/models/broken"), None).unwrap();
    let err = plain
        .run(std::slice::from_ref(&x))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("HTTP 500") && err.contains("/v2/models/broken/infer"),
        "{err}"
    );
    let err = load_remote(&format!("{base}/v2/models/no_such_model"), None)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("no_such_model") && err.contains("HTTP 404"),
        "{err}"
    );
}

#[test]
fn a_slow_server_times_out_without_retrying() {
    let Some(base) = server() else { return };
    let x = npz("test.npz").arrays["x"].slice_rows(0, 2);
    let mut slow = load_remote(
        &format!("{base}/v2/models/slow"),
        Some(Duration::from_millis(1500)),
    )
    .unwrap();
    let t = Instant::now();
    let err = slow.run(&[x]).err().unwrap().to_string();
    let took = t.elapsed();
    assert!(err.contains("timeout"), "{err}");
    // One attempt only: a timed-out inference may have run, so it is not sent again.
    assert!(took < Duration::from_millis(4000), "{took:?}");
}

#[test]
fn an_unreachable_server_is_a_clear_error_after_retries() {
    // A port nothing listens on (bound and released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = load_remote(
        &format!("http://127.0.0.1:{port}/v2/models/m"),
        Some(Duration::from_secs(2)),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("cannot connect") && err.contains("attempts"),
        "{err}"
    );
    let err = load_remote("http://127.0.0.1:1/not-v2", None)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/v2/models/NAME"), "{err}");
}

/// A one-model V2 server on 127.0.0.1 that answers every inference with `reply` (for
/// answers no real server gives). Returns the model's URL.
fn canned_server(reply: &'static str) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let answer = if first.contains("/infer") {
                reply
            } else if first.contains("/ready") {
                ""
            } else {
                r#"{"name":"m","platform":"onnx","inputs":[{"name":"x","datatype":"FP32","shape":[-1,64]}],"outputs":[{"name":"logits","datatype":"FP32","shape":[-1,10]}]}"#
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    format!("http://127.0.0.1:{port}/v2/models/m")
}

/// A text (BYTES) output is kept as text, never read as numbers; an answer without or with an
/// unknown datatype is refused, naming the output.
#[test]
fn text_outputs_stay_text_and_datatypes_are_required() {
    let x = npz("test.npz").arrays["x"].slice_rows(0, 2);
    let bytes = canned_server(
        r#"{"outputs":[{"name":"logits","datatype":"BYTES","shape":[2,1],"data":["1","7"]}]}"#,
    );
    let out = load_remote(&bytes, None)
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();
    assert_eq!(
        out[0].data,
        qgate_core::ArrayData::Str(vec!["1".into(), "7".into()])
    );
    assert!(out[0].to_f64().is_none());
    for (reply, needle) in [
        (
            r#"{"outputs":[{"name":"logits","shape":[2,1],"data":[1,7]}]}"#,
            "output 'logits' has no `datatype`",
        ),
        (
            r#"{"outputs":[{"name":"logits","datatype":"FLOAT","shape":[2,1],"data":[1,7]}]}"#,
            "unknown `datatype` \"FLOAT\"",
        ),
        (
            r#"{"outputs":[{"name":"logits","datatype":"BYTES","shape":[2,1],"data":[1,7]}]}"#,
            "(BYTES) has non-text `data`",
        ),
        (
            r#"{"outputs":[{"name":"logits","datatype":"FP32","shape":[2,1],"data":["a","b"]}]}"#,
            "(FP32) has non-numeric `data`",
        ),
    ] {
        let err = load_remote(&canned_server(reply), None)
            .unwrap()
            .run(std::slice::from_ref(&x))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(needle), "{reply}: {err}");
    }
}
