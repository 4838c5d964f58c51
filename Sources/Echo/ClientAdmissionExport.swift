// ClientLimitHandOver.swift extends ClientKey, which lives in the ClientAdmission product now; this
// import lets it (and Echo's users, reflectd's upgrade among them) see it until the hand-over code
// moves to the upgrade product.
@_exported import ClientAdmission
