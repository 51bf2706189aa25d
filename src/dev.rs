//! The `[dev]` services the binary starts for a local demo: the development IdP at
//! `oidc.issuer` and the echo upstream at `dev.echo`.

use crate::config::Config;
use crate::devecho::DevEcho;
use crate::devidp::{DevIdp, DevIdpSettings};
use crate::start::StartError;

/// The dev services of one config (none when `[dev]` asks for none).
#[derive(Debug, Default)]
pub struct DevServices {
    idp: Option<DevIdp>,
    echo: Option<DevEcho>,
}

impl DevServices {
    /// Starts what `[dev]` asks for.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let mut services = Self::default();
        if config.dev.idp {
            let settings = DevIdpSettings::for_config(config).ok_or_else(|| {
                StartError::setting("oidc.issuer", "the dev IdP needs a loopback IP and a port")
            })?;
            let addr = settings.listen;
            let idp = DevIdp::start(settings).await.map_err(|e| {
                StartError::unavailable("dev.idp", format!("cannot listen at {addr}: {e}"))
            })?;
            tracing::info!(issuer = idp.issuer(), "development IdP running (dev.idp)");
            services.idp = Some(idp);
        }
        if let Some(addr) = config.dev.echo {
            let echo = DevEcho::start(addr).await.map_err(|e| {
                StartError::unavailable("dev.echo", format!("cannot listen at {addr}: {e}"))
            })?;
            tracing::info!(addr = %echo.addr(), "echo upstream running (dev.echo)");
            services.echo = Some(echo);
        }
        Ok(services)
    }

    /// The dev IdP, if running.
    #[must_use]
    pub fn idp(&self) -> Option<&DevIdp> {
        self.idp.as_ref()
    }

    /// Stops them.
    pub async fn shutdown(&self) {
        if let Some(idp) = &self.idp {
            idp.shutdown().await;
        }
        if let Some(echo) = &self.echo {
            echo.shutdown().await;
        }
    }
}
