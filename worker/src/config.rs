//! The worker's configuration, from the environment the container is given (infra
//! `workers.bicep`): where data and work live (see [`stylefleet::setup::Location::from_env`]),
//! which device styles, where the health endpoint listens, how long a stopping worker may
//! finish its batch.

use std::time::Duration;

/// Why the environment cannot configure a worker.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable holds something unusable.
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which device styles frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU when the build has CUDA and one is present, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// A GPU, or fail at start.
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            other => Err(format!("unknown device {other:?}: use auto, cpu or cuda")),
        }
    }
}

/// Everything the worker reads besides the location.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// `STYLEFLEET_DEVICE` (default `auto`).
    pub device: DeviceChoice,
    /// `STYLEFLEET_HEALTH_PORT` (default 8080; 0 picks a free port, for tests).
    pub health_port: u16,
    /// `STYLEFLEET_SHUTDOWN_GRACE_SECS` (default 30): how long the batch in hand may run on after
    /// SIGTERM before it is abandoned for another worker.
    pub grace: Duration,
    /// `STYLEFLEET_EXIT_WHEN_IDLE_SECS`: exit after the queue has been empty this long (default:
    /// never; the scaler stops idle replicas).
    pub exit_when_idle: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            device: DeviceChoice::Auto,
            health_port: 8080,
            grace: Duration::from_secs(30),
            exit_when_idle: None,
        }
    }
}

impl WorkerConfig {
    /// Reads the variables; unset or empty ones keep the defaults.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the variables through `lookup` (the environment, or a table in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(value) = lookup("STYLEFLEET_DEVICE") {
            config.device = value.parse().map_err(|reason| ConfigError::Invalid {
                name: "STYLEFLEET_DEVICE",
                value: value.clone(),
                reason,
            })?;
        }
        if let Some(value) = lookup("STYLEFLEET_HEALTH_PORT") {
            config.health_port = value.parse().map_err(|e| ConfigError::Invalid {
                name: "STYLEFLEET_HEALTH_PORT",
                value: value.clone(),
                reason: format!("{e}"),
            })?;
        }
        if let Some(value) = lookup("STYLEFLEET_SHUTDOWN_GRACE_SECS") {
            config.grace = secs("STYLEFLEET_SHUTDOWN_GRACE_SECS", value)?;
        }
        if let Some(value) = lookup("STYLEFLEET_EXIT_WHEN_IDLE_SECS") {
            config.exit_when_idle = Some(secs("STYLEFLEET_EXIT_WHEN_IDLE_SECS", value)?);
        }
        Ok(config)
    }
}

fn secs(name: &'static str, value: String) -> Result<Duration, ConfigError> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        Ok(_) => Err(ConfigError::Invalid {
            name,
            value,
            reason: "must be a non-negative number of seconds".into(),
        }),
        Err(e) => Err(ConfigError::Invalid {
            name,
            value,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(
            WorkerConfig::from_lookup(table(&[])).unwrap(),
            WorkerConfig::default()
        );
        let c = WorkerConfig::from_lookup(table(&[
            ("STYLEFLEET_DEVICE", "CUDA"),
            ("STYLEFLEET_HEALTH_PORT", "9000"),
            ("STYLEFLEET_SHUTDOWN_GRACE_SECS", "240"),
            ("STYLEFLEET_EXIT_WHEN_IDLE_SECS", "1.5"),
        ]))
        .unwrap();
        assert_eq!(c.device, DeviceChoice::Cuda);
        assert_eq!(c.health_port, 9000);
        assert_eq!(c.grace, Duration::from_secs(240));
        assert_eq!(c.exit_when_idle, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (name, value) in [
            ("STYLEFLEET_DEVICE", "tpu"),
            ("STYLEFLEET_HEALTH_PORT", "70000"),
            ("STYLEFLEET_SHUTDOWN_GRACE_SECS", "-1"),
            ("STYLEFLEET_EXIT_WHEN_IDLE_SECS", "soon"),
        ] {
            let err = WorkerConfig::from_lookup(table(&[(name, value)])).unwrap_err();
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }
}
