"¢	the balance is 10, 30 asked
asked<
balance1
limits'J%

dailyè

token2
[REDACTED]
password2
[REDACTED]"INSUFFICIENT_FUNDS*bank