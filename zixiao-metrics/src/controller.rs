//! The controller's own work as Prometheus series: placements and their
//! latency, the scheduler filters that left instances unschedulable,
//! converges, failovers and store commits. [`Metrics`] receives them as the
//! controller's [`Telemetry`] (`Controller::set_telemetry`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;
use zixiao_core::telemetry::{PlacementOutcome, Telemetry};

use crate::{duration_histogram, escape, Metrics};

/// The label of an event's outcome (`ok`/`error`, `placed`/`unschedulable`).
type OutcomeLabels = [(&'static str, &'static str); 1];
/// The label of a scheduler filter (`resources`, `zone`, ...).
type FilterLabels = [(&'static str, String); 1];

/// The controller's series, registered with the rest of [`Metrics`].
#[derive(Debug)]
pub(crate) struct ControllerSeries {
    placements: Family<OutcomeLabels, Counter>,
    placement_duration: Histogram,
    unschedulable: Family<FilterLabels, Counter>,
    converges: Family<OutcomeLabels, Counter>,
    converge_duration: Histogram,
    failovers: Counter,
    failover_instances: Counter,
    failover_duration: Histogram,
    commits: Family<OutcomeLabels, Counter>,
    commit_duration: Histogram,
}

impl ControllerSeries {
    /// The series, registered in `registry` under `zixiao_`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let series = ControllerSeries {
            placements: Family::default(),
            // A placement takes microseconds: 1 µs to about 4 s, times 4.
            placement_duration: Histogram::new(exponential_buckets(0.000_001, 4.0, 12)),
            unschedulable: Family::default(),
            converges: Family::default(),
            converge_duration: duration_histogram(),
            failovers: Counter::default(),
            failover_instances: Counter::default(),
            failover_duration: duration_histogram(),
            commits: Family::default(),
            commit_duration: duration_histogram(),
        };
        registry.register(
            "zixiao_placements",
            "Placements the scheduler answered, by outcome (placed, unschedulable)",
            series.placements.clone(),
        );
        registry.register_with_unit(
            "zixiao_placement_duration",
            "How long the scheduler took to answer for one instance",
            Unit::Seconds,
            series.placement_duration.clone(),
        );
        registry.register(
            "zixiao_unschedulable",
            "Unschedulable placements, by each scheduler filter that rejected nodes",
            series.unschedulable.clone(),
        );
        registry.register(
            "zixiao_converges",
            "Converges of an instance, by outcome (ok, error)",
            series.converges.clone(),
        );
        registry.register_with_unit(
            "zixiao_converge_duration",
            "How long one converge of an instance took",
            Unit::Seconds,
            series.converge_duration.clone(),
        );
        registry.register(
            "zixiao_failovers",
            "Lost nodes whose instances were released",
            series.failovers.clone(),
        );
        registry.register(
            "zixiao_failover_instances",
            "Instances released from lost nodes (moved, failed or deleted)",
            series.failover_instances.clone(),
        );
        registry.register_with_unit(
            "zixiao_failover_duration",
            "How long releasing one lost node's instances took",
            Unit::Seconds,
            series.failover_duration.clone(),
        );
        registry.register(
            "zixiao_store_commits",
            "Store commits of the controller, by outcome (ok, error)",
            series.commits.clone(),
        );
        registry.register_with_unit(
            "zixiao_store_commit_duration",
            "How long a store commit of the controller took",
            Unit::Seconds,
            series.commit_duration.clone(),
        );
        series
    }
}

fn outcome(ok: bool) -> OutcomeLabels {
    [("outcome", if ok { "ok" } else { "error" })]
}

impl Telemetry for Metrics {
    fn placement(&self, outcome: PlacementOutcome<'_>, elapsed: Duration) {
        let series = &self.controller;
        series.placement_duration.observe(elapsed.as_secs_f64());
        match outcome {
            PlacementOutcome::Placed => {
                series
                    .placements
                    .get_or_create(&[("outcome", "placed")])
                    .inc();
            }
            PlacementOutcome::Unschedulable(rejections) => {
                series
                    .placements
                    .get_or_create(&[("outcome", "unschedulable")])
                    .inc();
                for rejection in rejections {
                    series
                        .unschedulable
                        .get_or_create(&[("filter", escape(&rejection.filter))])
                        .inc();
                }
            }
        }
    }

    fn converge(&self, ok: bool, elapsed: Duration) {
        let series = &self.controller;
        series.converges.get_or_create(&outcome(ok)).inc();
        series.converge_duration.observe(elapsed.as_secs_f64());
    }

    fn failover(&self, instances: usize, elapsed: Duration) {
        let series = &self.controller;
        series.failovers.inc();
        series.failover_instances.inc_by(instances as u64);
        series.failover_duration.observe(elapsed.as_secs_f64());
    }

    fn store_commit(&self, ok: bool, elapsed: Duration) {
        let series = &self.controller;
        series.commits.get_or_create(&outcome(ok)).inc();
        series.commit_duration.observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample;
    use zixiao_core::scheduler::Rejection;

    #[test]
    fn each_controller_event_lands_in_its_series() {
        let metrics = Metrics::new();
        let ms = Duration::from_millis(1);
        metrics.placement(PlacementOutcome::Placed, Duration::from_micros(3));
        let rejections = [
            Rejection {
                filter: "resources".to_owned(),
                reason: "insufficient memory".to_owned(),
                nodes: 2,
            },
            Rejection {
                filter: "zone".to_owned(),
                reason: "not in zone a".to_owned(),
                nodes: 1,
            },
        ];
        metrics.placement(PlacementOutcome::Unschedulable(&rejections), ms);
        metrics.placement(PlacementOutcome::Unschedulable(&rejections[..1]), ms);
        metrics.converge(true, ms);
        metrics.converge(false, ms);
        metrics.converge(true, ms);
        metrics.failover(3, Duration::from_millis(40));
        metrics.store_commit(true, ms);
        metrics.store_commit(false, ms);
        let text = metrics.encode(None);
        let expect = [
            ("zixiao_placements_total{outcome=\"placed\"}", 1.0),
            ("zixiao_placements_total{outcome=\"unschedulable\"}", 2.0),
            ("zixiao_placement_duration_seconds_count", 3.0),
            ("zixiao_unschedulable_total{filter=\"resources\"}", 2.0),
            ("zixiao_unschedulable_total{filter=\"zone\"}", 1.0),
            ("zixiao_converges_total{outcome=\"ok\"}", 2.0),
            ("zixiao_converges_total{outcome=\"error\"}", 1.0),
            ("zixiao_converge_duration_seconds_count", 3.0),
            ("zixiao_failovers_total", 1.0),
            ("zixiao_failover_instances_total", 3.0),
            ("zixiao_failover_duration_seconds_sum", 0.04),
            ("zixiao_store_commits_total{outcome=\"ok\"}", 1.0),
            ("zixiao_store_commits_total{outcome=\"error\"}", 1.0),
            ("zixiao_store_commit_duration_seconds_count", 2.0),
        ];
        for (series, value) in expect {
            assert_eq!(
                sample(&text, &format!("{series} ")),
                Some(value),
                "{series}:\n{text}"
            );
        }
        // The 3 µs placement is in the 4 µs bucket, not below.
        assert_eq!(
            sample(
                &text,
                "zixiao_placement_duration_seconds_bucket{le=\"0.000004\"} "
            ),
            Some(1.0),
            "{text}"
        );
    }
}
