"èthe command is invalid"INVALID_COMMAND*bank20
amountNOT_POSITIVE"must be greater than 02*
items[2].skuEMPTY"must not be empty