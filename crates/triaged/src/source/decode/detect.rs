//! Format detection for [`Format::Auto`](crate::config::Format::Auto): which
//! decoder a payload's shape calls for (see the module docs of `decode`).

use super::fields::has;
use super::value::V;
use super::DecodeError;

pub(super) enum Detected {
    AlertList,
    AlertWebhook,
    Zabbix,
    Nagios,
    Native,
}

const LOOKED_FOR: &str = "expected a JSON array (Alertmanager v2 alert list) or an object with `alerts` \
     (Alertmanager webhook), `trigger_name`/`event_value` (Zabbix), \
     `notification_type`/`host_name`/`service_state`/`host_state` or `host`+`state`+`type` \
     (Nagios/Icinga), or `check` (native event)";

pub(super) fn detect(root: &V<'_>) -> Result<Detected, DecodeError> {
    let o = match root {
        V::Arr(_) => return Ok(Detected::AlertList),
        V::Obj(o) => o,
        other => return Err(DecodeError::Unrecognized(format!("got a JSON {}; {LOOKED_FOR}", other.type_name()))),
    };
    if has(o, "alerts") {
        Ok(Detected::AlertWebhook)
    } else if has(o, "trigger_name") || has(o, "event_value") {
        Ok(Detected::Zabbix)
    } else if ["notification_type", "host_name", "service_state", "host_state"].iter().any(|k| has(o, k))
        || (has(o, "host") && has(o, "state") && has(o, "type"))
    {
        Ok(Detected::Nagios)
    } else if has(o, "check") {
        Ok(Detected::Native)
    } else {
        Err(DecodeError::Unrecognized(format!("object has none of the keys looked for; {LOOKED_FOR}")))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Format;
    use crate::source::decode::test_support::{dec, webhook};
    use serde_json::json;

    #[test]
    fn auto_detection() {
        let src = |v: serde_json::Value| dec(Format::Auto, &v).unwrap()[0].source.clone();
        assert_eq!(src(json!([{"labels": {"alertname": "A"}}])), "alertmanager");
        assert_eq!(src(webhook(vec![json!({"labels": {"alertname": "A"}})])), "alertmanager");
        assert_eq!(src(json!({"trigger_name": "T"})), "zabbix");
        assert_eq!(src(json!({"event_value": "1", "trigger_name": "T", "host": "h", "state": "x", "type": "y"})), "zabbix");
        assert_eq!(src(json!({"host_name": "h"})), "nagios");
        assert_eq!(src(json!({"host": "h", "service_state": "OK", "service": "s"})), "nagios");
        assert_eq!(src(json!({"host": "h", "state": "UP", "type": "RECOVERY", "source": "icinga"})), "icinga");
        assert_eq!(src(json!({"source": "n", "check": "c", "severity": "info", "status": "firing", "host": "h", "state": "x"})), "n");
        for v in [json!({"host": "h"}), json!({"check": null, "alerts": null}), json!("event"), json!(5), json!(null)] {
            let e = dec(Format::Auto, &v).unwrap_err();
            assert_eq!(e.kind(), "unrecognized", "{v}");
            assert!(e.to_string().contains("`trigger_name`/`event_value` (Zabbix)"), "{e}");
        }
        let e = dec(Format::Auto, &json!(true)).unwrap_err();
        assert!(e.to_string().starts_with("unrecognized payload: got a JSON boolean;"), "{e}");
    }
}
