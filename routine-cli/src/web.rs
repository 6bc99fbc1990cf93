//! `ui`: serves routine-ui's web view of the configured store until Ctrl-C.

use crate::args::UiArgs;
use crate::config::Config;
use crate::failure::Failure;

pub(crate) async fn ui(config: &Config, args: UiArgs) -> Result<(), Failure> {
    let token = args
        .token
        .or_else(|| std::env::var("ROUTINE_UI_TOKEN").ok());
    let settings =
        routine_ui::Settings::new(args.bind, token).map_err(|e| Failure::usage(e.to_string()))?;
    let store = config.open_store_to_read()?;
    let stop = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    routine_ui::serve(store, settings, stop)
        .await
        .map_err(|e| match e {
            routine_ui::UiError::Serve(_) => Failure::failed(e.to_string()),
            _ => Failure::usage(e.to_string()),
        })
}
