//! The fault-hook routes of the admin API, over the socket: off unless the binary
//! installs hooks, and every refusal leaves the services as they were.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use common::Site;
use maildr_api::faults::{FaultHookError, FaultHookFuture, FaultHooks, Service, ServiceState};

/// Hooks over a table of services (smtp and imap only, so `dns` is "not here"),
/// recording every change asked of them.
#[derive(Default)]
struct TableHooks {
    running: Mutex<BTreeMap<Service, bool>>,
    changes: Mutex<Vec<(Service, bool)>>,
}

impl TableHooks {
    fn new() -> Arc<TableHooks> {
        let hooks = TableHooks::default();
        hooks.running.lock().unwrap().extend([(Service::Smtp, true), (Service::Imap, true)]);
        Arc::new(hooks)
    }

    fn state(&self, service: Service) -> Option<ServiceState> {
        let running = *self.running.lock().unwrap().get(&service)?;
        Some(ServiceState { service, running, listen: vec![format!("127.0.0.1:{}", 2000 + service as u16)] })
    }

    fn changes(&self) -> Vec<(Service, bool)> {
        self.changes.lock().unwrap().clone()
    }
}

impl FaultHooks for TableHooks {
    fn services(&self) -> Vec<ServiceState> {
        Service::ALL.into_iter().filter_map(|s| self.state(s)).collect()
    }

    fn set_running(&self, service: Service, running: bool) -> FaultHookFuture<'_> {
        Box::pin(async move {
            if self.state(service).is_none() {
                return Err(FaultHookError::NotHere { site: "bj".into(), service });
            }
            self.changes.lock().unwrap().push((service, running));
            self.running.lock().unwrap().insert(service, running);
            Ok(self.state(service).expect("present"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hooks_the_fault_routes_answer_404_whatever_is_asked() {
    let site = Site::start().await;
    for (method, path, body) in [
        ("GET", "/api/faults/services", None),
        ("PUT", "/api/faults/services/smtp", Some(r#"{"running":false}"#)),
        ("PUT", "/api/faults/services/smtp", Some(r#"{"bogus":1}"#)),
        ("PUT", "/api/faults/services/pop3", Some(r#"{"running":false}"#)),
    ] {
        let reply = site.call(method, path, body).await;
        reply.assert_error(404, None);
        assert!(reply.json()["error"].as_str().unwrap().contains("fault hooks are off"), "{reply:?}");
    }
    // The token is checked first: without it, nothing says whether hooks exist.
    site.call_with("GET", "/api/faults/services", None, None).await.assert_error(401, None);
    // The routes are documented all the same, for the drill engine to find.
    let doc = site.call_with("GET", "/api/openapi.json", None, None).await.json();
    for name in ["ServiceSwitch", "ServicesView", "ServiceState", "Service"] {
        assert!(doc["components"]["schemas"].get(name).is_some(), "schema {name} in the document");
    }
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_stop_and_start_a_service_and_refusals_change_nothing() {
    let hooks = TableHooks::new();
    let installed = Arc::clone(&hooks) as Arc<dyn FaultHooks>;
    let site = Site::start_with(move |state| state.with_fault_hooks(installed)).await;
    let listed = site.call("GET", "/api/faults/services", None).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let listed = listed.json();
    assert_eq!(listed["site"], "bj");
    let names: Vec<&str> =
        listed["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["smtp", "imap"]);

    let refused = [
        ("/api/faults/services/pop3", r#"{"running":false}"#, 404, Some("service"), "pop3"),
        ("/api/faults/services/dns", r#"{"running":false}"#, 404, Some("service"), "runs no dns"),
        ("/api/faults/services/smtp", r#"{"running":"no"}"#, 422, Some("running"), "running"),
        ("/api/faults/services/smtp", r#"{"running":false,"also":1}"#, 422, Some("also"), "also"),
        ("/api/faults/services/smtp", r#"{}"#, 422, Some("running"), "running"),
        ("/api/faults/services/smtp", r#"{"running":"#, 400, None, "JSON"),
    ];
    for (path, body, status, field, says) in refused {
        let reply = site.call("PUT", path, Some(body)).await;
        reply.assert_error(status, field);
        assert!(reply.json()["error"].as_str().unwrap().contains(says), "{path} {body}: {reply:?}");
        assert!(hooks.changes().is_empty(), "{path} {body} changed {:?}", hooks.changes());
        assert_eq!(site.call("GET", "/api/faults/services", None).await.json(), listed, "{path} {body}");
    }

    let stopped = site.call("PUT", "/api/faults/services/imap", Some(r#"{"running":false}"#)).await;
    assert_eq!(stopped.status, 200, "{stopped:?}");
    assert_eq!((stopped.json()["service"].as_str(), stopped.json()["running"].as_bool()), (Some("imap"), Some(false)));
    let started = site.call("PUT", "/api/faults/services/imap", Some(r#"{"running":true}"#)).await;
    assert_eq!(started.json()["running"], true, "{started:?}");
    assert_eq!(hooks.changes(), [(Service::Imap, false), (Service::Imap, true)]);
    site.stop().await;
}
