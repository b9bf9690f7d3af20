//! `kmailops crds`: the CRDs generated from the Rust types.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct CrdsArgs {
    /// Write one YAML file per kind into this folder instead of printing them all.
    #[arg(long, short = 'o', value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

pub fn run(args: &CrdsArgs) -> anyhow::Result<ExitCode> {
    let crds = crate::crds::all();
    match &args.output_dir {
        None => print!("{}", crate::crds::to_yaml(&crds)?),
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in &crds {
                let path = dir.join(crate::crds::file_name(crd));
                let yaml = crate::crds::to_yaml(std::slice::from_ref(crd))?;
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
