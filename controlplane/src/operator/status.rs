//! A cluster's status as a pure function of what the operator observed: the
//! workloads' replica counts and the processes registered in etcd.
//!
//! - `Ready`: every wanted gateway and worker pod is ready and registered
//!   (at least one of each).
//! - `Progressing`: the workloads have not caught up with the spec yet (a
//!   rollout, a scale, pods starting).
//! - `Degraded`: the spec cannot be applied, etcd cannot be reached, or
//!   nothing of a component is ready.

use super::crd::{ComponentStatus, KafscaleClusterStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// What the reconciler saw of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub generation: Option<i64>,
    /// Why the spec could not be applied, if it could not.
    pub spec_error: Option<String>,
    pub gateways: Option<ComponentStatus>,
    pub workers: Option<ComponentStatus>,
    /// Workloads still rolling out (their observed generation or updated
    /// replicas lag).
    pub rolling_out: bool,
    /// Why etcd could not be read, if it could not.
    pub etcd_error: Option<String>,
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: &[Condition],
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    // The transition time moves only when the status does.
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn complete(c: &Option<ComponentStatus>) -> bool {
    c.as_ref().is_some_and(|c| {
        c.replicas > 0 && c.ready_replicas >= c.replicas && c.registered >= c.replicas
    })
}

fn none_ready(c: &Option<ComponentStatus>) -> bool {
    c.as_ref()
        .is_none_or(|c| c.replicas > 0 && c.ready_replicas == 0)
}

/// The status to write for `o`, keeping the transition times of conditions
/// whose status did not change.
pub fn cluster_status(
    o: &Observed,
    previous: Option<&KafscaleClusterStatus>,
    now: Time,
) -> KafscaleClusterStatus {
    let prev = previous.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let g = o.generation;
    let describe = |what: &str, c: &Option<ComponentStatus>| match c {
        Some(c) => format!(
            "{what}: {}/{} ready, {} registered",
            c.ready_replicas, c.replicas, c.registered
        ),
        None => format!("{what}: not created"),
    };
    let summary = format!(
        "{}; {}",
        describe("gateways", &o.gateways),
        describe("workers", &o.workers)
    );
    let ready = o.spec_error.is_none()
        && o.etcd_error.is_none()
        && !o.rolling_out
        && complete(&o.gateways)
        && complete(&o.workers);
    let (degraded, degraded_reason, degraded_message) = if let Some(e) = &o.spec_error {
        (true, "InvalidSpec", e.clone())
    } else if let Some(e) = &o.etcd_error {
        (true, "MetadataUnreachable", e.clone())
    } else if none_ready(&o.gateways) || none_ready(&o.workers) {
        (true, "ComponentDown", summary.clone())
    } else {
        (false, "AsExpected", summary.clone())
    };
    let progressing = o.spec_error.is_none() && !ready;
    KafscaleClusterStatus {
        observed_generation: g,
        conditions: vec![
            condition(
                "Ready",
                ready,
                if ready { "AllReady" } else { "NotReady" },
                summary.clone(),
                g,
                prev,
                &now,
            ),
            condition(
                "Progressing",
                progressing,
                if o.rolling_out {
                    "RollingOut"
                } else if progressing {
                    "PodsStarting"
                } else {
                    "Settled"
                },
                summary,
                g,
                prev,
                &now,
            ),
            condition(
                "Degraded",
                degraded,
                degraded_reason,
                degraded_message,
                g,
                prev,
                &now,
            ),
        ],
        gateways: o.gateways.clone(),
        workers: o.workers.clone(),
    }
}

/// The status of condition `kind` ("True"/"False"), if present.
pub fn condition_status<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(replicas: i32, ready: i32, registered: i32) -> Option<ComponentStatus> {
        Some(ComponentStatus {
            replicas,
            ready_replicas: ready,
            registered,
        })
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("timestamp"))
    }

    #[test]
    fn ready_needs_every_pod_ready_and_registered() {
        let mut o = Observed {
            generation: Some(3),
            gateways: comp(2, 2, 2),
            workers: comp(3, 3, 3),
            ..Default::default()
        };
        let s = cluster_status(&o, None, t(100));
        assert_eq!(condition_status(&s.conditions, "Ready"), Some("True"));
        assert_eq!(
            condition_status(&s.conditions, "Progressing"),
            Some("False")
        );
        assert_eq!(condition_status(&s.conditions, "Degraded"), Some("False"));
        assert_eq!(s.observed_generation, Some(3));
        // A worker pod ready but not (yet) registered: not Ready.
        o.workers = comp(3, 3, 2);
        let s = cluster_status(&o, None, t(100));
        assert_eq!(condition_status(&s.conditions, "Ready"), Some("False"));
        assert_eq!(condition_status(&s.conditions, "Progressing"), Some("True"));
        assert_eq!(condition_status(&s.conditions, "Degraded"), Some("False"));
    }

    #[test]
    fn nothing_ready_or_no_metadata_is_degraded() {
        let o = Observed {
            gateways: comp(2, 0, 0),
            workers: comp(3, 3, 3),
            ..Default::default()
        };
        let s = cluster_status(&o, None, t(1));
        assert_eq!(condition_status(&s.conditions, "Degraded"), Some("True"));
        let o = Observed {
            gateways: comp(2, 2, -1),
            workers: comp(3, 3, -1),
            etcd_error: Some("connection refused".into()),
            ..Default::default()
        };
        let s = cluster_status(&o, None, t(1));
        assert_eq!(condition_status(&s.conditions, "Ready"), Some("False"));
        let d = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(d.reason, "MetadataUnreachable");
    }

    #[test]
    fn an_invalid_spec_is_degraded_not_progressing() {
        let o = Observed {
            spec_error: Some("spec.etcd.endpoints is empty".into()),
            ..Default::default()
        };
        let s = cluster_status(&o, None, t(1));
        assert_eq!(
            condition_status(&s.conditions, "Progressing"),
            Some("False")
        );
        let d = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "InvalidSpec")
        );
    }

    #[test]
    fn transition_times_move_only_when_the_status_changes() {
        let o = Observed {
            gateways: comp(1, 1, 1),
            workers: comp(1, 1, 1),
            ..Default::default()
        };
        let first = cluster_status(&o, None, t(10));
        let again = cluster_status(&o, Some(&first), t(20));
        assert_eq!(first.conditions, again.conditions);
        let mut down = o.clone();
        down.workers = comp(1, 0, 0);
        let changed = cluster_status(&down, Some(&again), t(30));
        let ready = changed
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.last_transition_time, t(30));
    }
}
