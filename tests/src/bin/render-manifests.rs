#![forbid(unsafe_code)]
//! Writes `manifests/rendered/karpenter.yaml`: the Helm chart rendered by the real helm with
//! default values (and a placeholder cluster name), the generated certificate left empty.

use std::process::ExitCode;

fn main() -> ExitCode {
    let home = match karpenter_e2e::Scratch::new("render-manifests") {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let file = karpenter_e2e::helm::rendered_file();
    let result = karpenter_e2e::helm::expected_rendering(&home.0).and_then(|text| {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| karpenter_e2e::E2eError::Io {
                what: format!("create {}", dir.display()),
                source: e,
            })?;
        }
        std::fs::write(&file, text).map_err(|e| karpenter_e2e::E2eError::Io {
            what: format!("write {}", file.display()),
            source: e,
        })
    });
    match result {
        Ok(()) => {
            println!("wrote {}", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
