//! Secrets of the sink: read from env vars and files, build errors that name
//! the variable or file, and never a secret in `Debug`, `Display` or errors.

use wiremock::matchers::bearer_token;
use wiremock::{Mock, MockServer, ResponseTemplate};

use triaged::config::{AuthConfig, SinkProfile};
use triaged::incident::{ActionKind, SinkError};
use triaged::metrics::Metrics;
use triaged::sink::{RestSink, SinkBuildError};

use super::{answer, build, config, config_with_auth, env_secret, file_secret, sample_action, secret_file};

#[tokio::test]
async fn bearer_token_from_env_var() {
    std::env::set_var("TRIAGED_TEST_ENV_TOKEN", "env-token-abc");
    let server = MockServer::start().await;
    Mock::given(bearer_token("env-token-abc")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&server).await;
    let (sink, _) =
        build(&config_with_auth(SinkProfile::Generic, &server.uri(), AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_ENV_TOKEN") }));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

#[tokio::test]
async fn bearer_token_from_file_trims_trailing_newline() {
    let (_dir, file) = secret_file("file-token-xyz\r\n");
    let server = MockServer::start().await;
    Mock::given(bearer_token("file-token-xyz")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&server).await;
    let (sink, _) = build(&config_with_auth(SinkProfile::Generic, &server.uri(), AuthConfig::Bearer { token: file_secret(&file) }));
    sink.apply(&sample_action(ActionKind::Open)).await.unwrap();
    server.verify().await;
}

#[test]
fn missing_env_var_names_the_variable() {
    let cfg = config_with_auth(
        SinkProfile::Generic,
        "http://127.0.0.1:9",
        AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_SURELY_UNSET_VAR") },
    );
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(&err, SinkBuildError::MissingEnv { var, .. } if var == "TRIAGED_TEST_SURELY_UNSET_VAR"));
    let text = err.to_string();
    assert!(text.contains("TRIAGED_TEST_SURELY_UNSET_VAR"), "{text}");
    assert!(text.contains("sink.auth.token"), "{text}");
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    let cfg = config_with_auth(
        SinkProfile::Generic,
        "http://127.0.0.1:9",
        AuthConfig::Basic { username: "u".into(), password: file_secret(&missing) },
    );
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("no-such-token") && text.contains("sink.auth.password"), "{text}");
}

#[test]
fn empty_secret_is_rejected() {
    let (_dir, file) = secret_file("\n");
    let cfg = config_with_auth(SinkProfile::Generic, "http://127.0.0.1:9", AuthConfig::Bearer { token: file_secret(&file) });
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, SinkBuildError::EmptyFile { .. }), "{err:?}");
}

#[test]
fn pagerduty_requires_a_routing_key() {
    let cfg = config(SinkProfile::Pagerduty, "http://127.0.0.1:9");
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(err.to_string().contains("sink.routing_key"), "{err}");
}

#[test]
fn bad_endpoint_is_a_build_error() {
    let cfg = config(SinkProfile::Generic, "not a url");
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, SinkBuildError::Endpoint(_)), "{err:?}");
}

#[test]
fn secrets_never_show_in_debug_or_display() {
    // Bearer from env, basic from file, routing key from file.
    std::env::set_var("TRIAGED_TEST_DEBUG_TOKEN", "tok-SECRET-1");
    let (_d1, pw) = secret_file("pw-SECRET-2\n");
    let (_d2, rk) = secret_file("rk-SECRET-3\n");
    let mut sinks = Vec::new();
    let mut cfg = config(SinkProfile::Servicenow, "https://user:url-SECRET-4@example.service-now.com/");
    cfg.auth = AuthConfig::Bearer { token: env_secret("TRIAGED_TEST_DEBUG_TOKEN") };
    sinks.push(RestSink::new(&cfg, Metrics::new()).unwrap());
    cfg.auth = AuthConfig::Basic { username: "svc".into(), password: file_secret(&pw) };
    sinks.push(RestSink::new(&cfg, Metrics::new()).unwrap());
    let mut cfg = config(SinkProfile::Pagerduty, "https://events.pagerduty.com");
    cfg.routing_key = Some(file_secret(&rk));
    sinks.push(RestSink::new(&cfg, Metrics::new()).unwrap());
    for sink in &sinks {
        for text in [format!("{sink:?}"), format!("{sink:#?}"), format!("{sink}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
    }
    assert!(format!("{}", sinks[0]).starts_with("servicenow sink at https://user@example.service-now.com"));
    assert!(format!("{:?}", sinks[1]).contains("basic"));

    // A token that cannot be a header value: the error does not quote it.
    let (_d3, bad) = secret_file("tok-SECRET-5\nsecond line\n");
    let cfg = config_with_auth(SinkProfile::Generic, "http://127.0.0.1:9", AuthConfig::Bearer { token: file_secret(&bad) });
    let err = RestSink::new(&cfg, Metrics::new()).unwrap_err();
    assert!(matches!(err, SinkBuildError::InvalidSecret { .. }), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[tokio::test]
async fn secrets_echoed_in_error_bodies_are_redacted() {
    let (_dir, pw) = secret_file("pw-ECHOED-9");
    let server = MockServer::start().await;
    answer(&server, "GET", ResponseTemplate::new(401).set_body_string("bad credentials for svc:pw-ECHOED-9")).await;
    let auth = AuthConfig::Basic { username: "svc".into(), password: file_secret(&pw) };
    let (sink, _) = build(&config_with_auth(SinkProfile::Servicenow, &server.uri(), auth));
    let err = sink.apply(&sample_action(ActionKind::Open)).await.unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, SinkError::Permanent(_)), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("ECHOED"), "{text}");
}
