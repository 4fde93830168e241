//! `keygate hash`

use keygate::password::hash_password;

pub(crate) fn run() -> anyhow::Result<()> {
    let password = super::read_stdin()?;
    if password.is_empty() {
        anyhow::bail!("nothing on stdin to hash");
    }
    println!("{}", hash_password(password.as_bytes())?.as_str());
    Ok(())
}
