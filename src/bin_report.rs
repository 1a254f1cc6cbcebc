//! `mobile_vla_report`: latency report of a rosbag2 recording of
//! `~/inference_stats` (see `crates/mobile_vla_report`). Exit 0 on success,
//! 2 on bad arguments, 1 when the bag cannot be reported.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match mobile_vla_report::parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match mobile_vla_report::run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mobile_vla_report: {e}");
            ExitCode::from(1)
        }
    }
}
