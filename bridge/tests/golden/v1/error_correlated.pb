"[the store is unavailable"STORE_UNAVAILABLE*bank:$01923b4c-5d6e-7f80-9123-456789abcdef*6
correlation_id$01923b4c-5d6e-7f80-9123-456789abcdef