*6
correlation_id$01923b4c-5d6e-7f80-9123-456789abcdef*
position4611686018427387907*
stream_version12