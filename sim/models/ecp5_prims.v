// Behavioural simulation models of the ECP5 primitives the ULX3S board top instantiates, for
// the board-top system test (yosys declares EHXPLLL and DCCA without a behaviour and maps
// IB / OBZ to its TRELLIS_IO cell). Needs a simulator with timing (Verilator --timing, Icarus).
`timescale 1ns / 1ps

// Input buffer (Lattice library: O follows the pad).
module IB (input I, output O);
	assign O = I;
endmodule

// Output buffer with tristate (Lattice library: T high floats the pad).
module OBZ (input I, input T, output O);
	assign O = T ? 1'bz : I;
endmodule

// Primary clock network driver (Lattice library: CLKO follows CLKI while CE is high, else low).
module DCCA (input CLKI, input CE, output CLKO);
	assign CLKO = CE & CLKI;
endmodule

// EHXPLLL, FEEDBK_PATH "CLKOP" and the CLKOP output only: CLKOP runs at
//     f_CLKOP = f_CLKI * CLKFB_DIV / CLKI_DIV,   f_VCO = f_CLKOP * CLKOP_DIV
// (ECP5 sysCLOCK PLL usage guide, TN1263), made by pll_model.v, which also checks the data
// sheet's ranges (PFD 3.125-400 MHz, VCO 400-800 MHz, CLKOP 3.125-400 MHz).
module EHXPLLL (
	input CLKI, input CLKFB, input PHASESEL1, input PHASESEL0, input PHASEDIR,
	input PHASESTEP, input PHASELOADREG, input STDBY, input PLLWAKESYNC, input RST,
	input ENCLKOP, input ENCLKOS, input ENCLKOS2, input ENCLKOS3,
	output CLKOP, output CLKOS, output CLKOS2, output CLKOS3, output LOCK, output INTLOCK,
	output REFCLK, output CLKINTFB
);
	parameter CLKI_DIV = 1;
	parameter CLKFB_DIV = 1;
	parameter CLKOP_DIV = 8;
	parameter CLKOS_DIV = 8;
	parameter CLKOS2_DIV = 8;
	parameter CLKOS3_DIV = 8;
	parameter CLKOP_ENABLE = "ENABLED";
	parameter CLKOS_ENABLE = "DISABLED";
	parameter CLKOS2_ENABLE = "DISABLED";
	parameter CLKOS3_ENABLE = "DISABLED";
	parameter CLKOP_CPHASE = 0;
	parameter CLKOS_CPHASE = 0;
	parameter CLKOS2_CPHASE = 0;
	parameter CLKOS3_CPHASE = 0;
	parameter CLKOP_FPHASE = 0;
	parameter CLKOS_FPHASE = 0;
	parameter CLKOS2_FPHASE = 0;
	parameter CLKOS3_FPHASE = 0;
	parameter FEEDBK_PATH = "CLKOP";
	parameter CLKOP_TRIM_POL = "RISING";
	parameter CLKOP_TRIM_DELAY = 0;
	parameter CLKOS_TRIM_POL = "RISING";
	parameter CLKOS_TRIM_DELAY = 0;
	parameter OUTDIVIDER_MUXA = "DIVA";
	parameter OUTDIVIDER_MUXB = "DIVB";
	parameter OUTDIVIDER_MUXC = "DIVC";
	parameter OUTDIVIDER_MUXD = "DIVD";
	parameter PLL_LOCK_MODE = 0;
	parameter PLL_LOCK_DELAY = 200;
	parameter STDBY_ENABLE = "DISABLED";
	parameter REFIN_RESET = "DISABLED";
	parameter SYNC_ENABLE = "DISABLED";
	parameter INT_LOCK_STICKY = "ENABLED";
	parameter DPHASE_SOURCE = "DISABLED";
	parameter PLLRST_ENA = "DISABLED";
	parameter INTFB_WAKE = "DISABLED";
	parameter LOCK_CYCLES = 16;

	wire clk_out;
	initial begin
		if (FEEDBK_PATH != "CLKOP" || CLKOP_ENABLE != "ENABLED") begin
			$display("EHXPLLL model: only FEEDBK_PATH CLKOP with CLKOP enabled is modelled");
			$finish;
		end
	end
	// (CLKOP fed back: f_CLKOP = f_PFD * CLKFB_DIV, f_VCO = f_CLKOP * CLKOP_DIV)
	deconvsr_pll_model #(.NAME("EHXPLLL"), .REF_DIV(CLKI_DIV), .VCO_MUL(CLKFB_DIV * CLKOP_DIV),
		.OUT_DIV(CLKOP_DIV), .PFD_MIN(3.125), .PFD_MAX(400.0), .VCO_MIN(400.0),
		.VCO_MAX(800.0), .OUT_MIN(3.125), .OUT_MAX(400.0), .LOCK_CYCLES(LOCK_CYCLES))
		clock (.REF(CLKI), .RST(RST), .CLK(clk_out), .LOCK(LOCK));

	assign CLKOP = clk_out;
	assign {CLKOS, CLKOS2, CLKOS3, INTLOCK, CLKINTFB} = 5'b0;
	assign REFCLK = CLKI;
endmodule
