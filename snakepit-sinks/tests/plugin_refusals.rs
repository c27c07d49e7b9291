//! A plugin that returns an error status: every refused event is reported
//! as dropped (reason `sink_refused`), and the counters are read through
//! the `SinkSet` that built the sink from a config file.

mod plugin_support;

use std::time::Duration;

use plugin_support::Recorder;
use snakepit_core::{builtin, Config, Value};
use snakepit_sinks::{telemetry_from_config, SinkSet, SinkStats};
use snakepit_testkit::plugins::plugin;

#[test]
fn refused_events_are_reported_dropped_and_counted_in_the_sink_set() {
    let toml = format!(
        "[[sinks]]\nkind = \"log\"\nevents = [\"snakepit.grpc.*\"]\n\n\
         [[sinks]]\nkind = \"plugin\"\npath = {:?}\n\
         config = {{ refuse_every = 2 }}\nevents = [\"snakepit.pool.*\"]\n",
        plugin("refusing").display().to_string()
    );
    let config = Config::from_toml(&toml, "refusing.toml").unwrap();
    let telemetry = telemetry_from_config(&config);
    let dropped = Recorder::attach(&telemetry, builtin::TELEMETRY_EVENTS_DROPPED);
    let sinks = SinkSet::from_config(&config, &telemetry).unwrap();
    assert_eq!(sinks.ids(), ["sinks[0].log", "sinks[1].plugin"]);

    // 1,282 events: the plugin refuses every second one.
    for n in 0..1282 {
        telemetry.execute(builtin::POOL_STATUS, &[("queue_depth", Value::Int(n))], &[]);
    }
    sinks.flush(Duration::from_secs(10)).unwrap();

    let stats = sinks.stats();
    assert_eq!(stats[0], ("sinks[0].log", SinkStats::Log));
    let (id, SinkStats::Plugin(plugin)) = stats[1] else {
        panic!("sinks[1] is a plugin: {stats:?}")
    };
    assert_eq!(id, "sinks[1].plugin");
    assert_eq!((plugin.delivered, plugin.failed), (641, 641), "{plugin:?}");
    assert_eq!(plugin.dropped(), 641);

    let refused: i64 = dropped
        .events()
        .iter()
        .filter(|e| e.meta("reason").and_then(Value::as_str) == Some("sink_refused"))
        .inspect(|e| {
            assert_eq!(e.meta("where").and_then(Value::as_str), Some("sink"));
            assert_eq!(
                e.meta("sink").and_then(Value::as_str),
                Some("plugin:refusing")
            );
        })
        .map(|e| e.measurement("count").and_then(Value::as_i64).unwrap())
        .sum();
    assert_eq!(refused, 641);
    sinks.shutdown(Duration::from_secs(5)).unwrap();
}
