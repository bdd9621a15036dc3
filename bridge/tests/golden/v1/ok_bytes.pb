%
#
application/json{"balance":100}