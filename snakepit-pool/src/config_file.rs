//! The pools of the one config file: the `[pool]` table, or the
//! `[[pools]]` tables, of a [`snakepit_core::Config`], read into
//! [`PoolConfig`]s with errors that name the file, the line and the full key
//! (`pools[1].workers`).

use std::collections::BTreeMap;

use snakepit_core::config::line_of_key;
use snakepit_core::Config;

use crate::config::{name_of_error, PoolConfig};
use crate::error::PoolError;

impl PoolConfig {
    /// The pools of `config`, read from the same file as its `[telemetry]`
    /// and `[[sinks]]` by [`Config::load`]: the one `[pool]` table, or each
    /// `[[pools]]` table in file order; empty when the file has neither.
    /// Every key of a table is a [`PoolConfig`] key (see
    /// [`crate::config`]), durations written as `"5s"`.
    ///
    /// Each pool is parsed and validated. An error is a
    /// [`PoolError::Config`] naming the config's file, the line and the
    /// full key: `pool.workers`, `pools[1].queue_timeout`. Two `[[pools]]`
    /// with the same `pool_name` (unset is `"default"`) are an error at the
    /// second one's `pool_name`.
    ///
    /// ```
    /// use snakepit_core::Config;
    /// use snakepit_pool::PoolConfig;
    ///
    /// let config = Config::from_toml(
    ///     r#"
    ///     [telemetry]
    ///     log_level = "info"
    ///
    ///     [[pools]]
    ///     pool_name = "fast"
    ///     adapter = "my_app.adapters:Model"
    ///     queue_timeout = "250ms"
    ///
    ///     [[pools]]
    ///     pool_name = "batch"
    ///     adapter = "my_app.adapters:Model"
    ///     workers = "four"
    ///     "#,
    ///     "snakepit.toml",
    /// )
    /// .unwrap();
    /// let e = PoolConfig::from_config(&config).unwrap_err().to_string();
    /// assert!(e.starts_with("snakepit.toml, line 13: invalid pool config `pools[1].workers`"), "{e}");
    /// ```
    pub fn from_config(config: &Config) -> Result<Vec<PoolConfig>, PoolError> {
        let source = config.source.as_ref();
        let error = |key: String, message: String| PoolError::Config {
            file: source.map(|s| s.file.clone()),
            line: source.and_then(|s| line_of_key(&s.text, &key)),
            key,
            message,
        };
        let tables: Vec<(String, &toml::Table)> = match (&config.pool, &config.pools[..]) {
            (Some(_), [_, ..]) => {
                return Err(error(
                    "pools".into(),
                    "`[pool]` and `[[pools]]` are both written; keep one: `[pool]` for one \
                     pool, or `[[pools]]` with a `pool_name` each"
                        .into(),
                ))
            }
            (Some(table), []) => vec![("pool".to_string(), table)],
            (None, tables) => tables
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("pools[{i}]"), t))
                .collect(),
        };
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut pools = Vec::with_capacity(tables.len());
        for (prefix, table) in tables {
            let value = toml::Value::Table(table.clone());
            let pool: PoolConfig = serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().message().trim_end().to_string();
                let key = name_of_error(&path, &message).unwrap_or_default();
                error(join(&prefix, &key), message)
            })?;
            pool.validate().map_err(|e| match e {
                PoolError::Config { key, message, .. } => error(join(&prefix, &key), message),
                other => other,
            })?;
            if let Some(first) = names.insert(pool.pool_name.clone(), prefix.clone()) {
                return Err(error(
                    format!("{prefix}.pool_name"),
                    format!(
                        "{:?} is already the name of {first}; give each pool its own pool_name",
                        pool.pool_name
                    ),
                ));
            }
            pools.push(pool);
        }
        Ok(pools)
    }
}

/// `prefix.key`, or `prefix` for an error about the whole table.
fn join(prefix: &str, key: &str) -> String {
    if key.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}
