package mapping

import "strings"

// currencyExponents maps ISO 4217 codes to their minor-unit exponent. Source:
// the ISO 4217 list (SIX Group), 2024 edition. Metals and testing codes are
// left out on purpose: nobody bills a patient in XAU. Read-only once built.
var currencyExponents = func() map[string]int {
	m := map[string]int{
		// 0 decimals
		"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
		"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
		// 3 decimals
		"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
		// 4 decimals
		"CLF": 4, "UYW": 4,
	}
	for _, c := range strings.Fields(currencyCodes2) {
		m[c] = 2
	}
	return m
}()

// currencyCodes2 are the active ISO 4217 codes with two decimals.
const currencyCodes2 = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD " +
	"BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR " +
	"FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD " +
	"KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN " +
	"NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS " +
	"SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD " +
	"XCG YER ZAR ZMW ZWG"

// currencyExponent returns the minor-unit exponent of an ISO 4217 code,
// case-insensitively.
func currencyExponent(code string) (int, bool) {
	if e, ok := currencyExponents[code]; ok {
		return e, true
	}
	e, ok := currencyExponents[strings.ToUpper(strings.TrimSpace(code))]
	return e, ok
}

var pow10 = [...]float64{1, 10, 100, 1000, 10000}
