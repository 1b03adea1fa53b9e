//! `cplbd`: the cplb daemon for one Kubernetes controller.

use std::process::ExitCode;

use clap::Parser;
use cplb_netns::daemon::options::{LogFormat, Options};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let options = Options::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&options.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match options.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    ExitCode::from(cplb_netns::daemon::run(options))
}
