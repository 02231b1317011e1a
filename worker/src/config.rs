//! The worker's configuration: flags, or the environment the container is given (infra
//! `workers.bicep`): which device styles, where the health endpoint listens, how long a stopping
//! worker may finish its batch. Where data and work live comes from the environment alone (see
//! [`stylefleet::setup::Location::from_env`]).

use clap::Parser;

pub use stylefleet::lifecycle::ServiceArgs;
pub use stylefleet::media::Codec;
pub use stylefleet::settings::{DeviceChoice, WorkerHardware};

/// Everything the worker reads besides the location; `stylefleet-worker --help` lists each flag
/// with its environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(
    name = "stylefleet-worker",
    version,
    about = "A style worker: consumes the batches queue until SIGTERM"
)]
pub struct WorkerConfig {
    /// The device and the chunk encoder.
    #[command(flatten)]
    pub hardware: WorkerHardware,
    /// The health endpoint and the shutdown timings.
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use clap::CommandFactory;
    use stylefleet::lifecycle::parse_from;

    use super::*;

    #[test]
    fn the_command_is_well_formed() {
        WorkerConfig::command().debug_assert();
    }

    #[test]
    fn flags_override_the_defaults() {
        let c: WorkerConfig = parse_from([
            "stylefleet-worker",
            "--device",
            "CUDA",
            "--health-port",
            "9000",
            "--grace",
            "240",
            "--exit-when-idle",
            "1.5",
            "--codec",
            "libx264",
        ])
        .unwrap();
        assert_eq!(c.hardware.codec, Codec::Libx264);
        assert_eq!(c.hardware.device, DeviceChoice::Cuda);
        assert_eq!(c.service.health_port, 9000);
        assert_eq!(c.service.grace, Duration::from_secs(240));
        assert_eq!(c.service.exit_when_idle, Some(Duration::from_millis(1500)));
        let gpu: WorkerConfig = parse_from(["stylefleet-worker", "--device", "gpu"]).unwrap();
        assert_eq!(gpu.hardware.device, DeviceChoice::Cuda);
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        for (flag, value) in [
            ("--device", "tpu"),
            ("--health-port", "70000"),
            ("--grace", "-1"),
            ("--grace", "NaN"),
            ("--exit-when-idle", "soon"),
            ("--codec", "vp9"),
        ] {
            let arg = format!("{flag}={value}");
            let err = parse_from::<WorkerConfig>(["stylefleet-worker", arg.as_str()]).unwrap_err();
            // A value outside an enum is InvalidValue; one a parser refuses, ValueValidation.
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                ),
                "{arg}: {err}"
            );
            assert!(err.to_string().contains(flag), "{arg}: {err}");
        }
    }

    #[test]
    fn help_names_each_variable() {
        let help = WorkerConfig::command().render_help().to_string();
        for name in [
            "STYLEFLEET_DEVICE",
            "STYLEFLEET_HEALTH_PORT",
            "STYLEFLEET_SHUTDOWN_GRACE_SECS",
            "STYLEFLEET_EXIT_WHEN_IDLE_SECS",
            "STYLEFLEET_CODEC",
        ] {
            assert!(help.contains(name), "{name} in\n{help}");
        }
    }
}
