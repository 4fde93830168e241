//! `keygate secret`

use keygate::token::HmacSecret;

pub(crate) fn run() -> anyhow::Result<()> {
    println!("{}", HmacSecret::generate_hex()?);
    Ok(())
}
