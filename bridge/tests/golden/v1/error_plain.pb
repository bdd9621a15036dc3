"&no account acc-9"
NO_ACCOUNT*bank