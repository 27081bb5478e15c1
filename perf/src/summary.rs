//! Key figures of a benchmark binary, written as one JSON object when it is
//! run with `--json FILE`, so `yard-netbench` can put every figure of a
//! `make bench` run in one results file.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Summary {
    figures: BTreeMap<String, f64>,
}

impl Summary {
    pub fn record(&mut self, name: impl Into<String>, value: f64) {
        self.figures.insert(name.into(), value);
    }

    /// Writes the figures to the file after `--json` on the command line,
    /// if there is one.
    pub fn write_if_asked(&self) -> std::io::Result<()> {
        let args: Vec<String> = std::env::args().collect();
        if let Some(path) = args
            .iter()
            .position(|a| a == "--json")
            .and_then(|i| args.get(i + 1))
        {
            let json =
                serde_json::to_string_pretty(&self.figures).map_err(std::io::Error::other)?;
            std::fs::write(path, json)?;
        }
        Ok(())
    }
}
