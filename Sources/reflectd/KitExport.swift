// UpgradeReceive.swift calls ServiceManager, which lives in the ServerKit product now; this import
// lets it see the kit without an import of its own until the upgrade moves to a product.
@_exported import ServerKit
