DROP TRIGGER positions_audit ON positions;
DROP TRIGGER trades_audit ON trades;
DROP TRIGGER orders_audit ON orders;
DROP FUNCTION log_audit_trail();
DROP TABLE audit_trail;
DROP TABLE risk_alerts;
DROP TYPE alert_severity;
